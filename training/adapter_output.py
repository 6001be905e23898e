"""The adapter folder a run writes: weights, `wayfarer_adapter.json` (what the engine checks and
the pipeline compares), the training config, the loss log and curve.

The folder is written into a private scratch folder next to its target and swapped in at the
very end (fsutils.replacing_folder), so a crashed or interrupted run never leaves a half-written
adapter where the chat engine would load it; the previous adapter stays until the new one is
complete."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fsutils import replacing_folder
from modeling.adapters import ADAPTER_METADATA_FILE
from modeling.base_model import ModelConfig
from settings import Settings
from training.config import RunSettings, TrainingConfig, config_hash
from training.precision import Precision
from training.runs import eval_points


TRAINING_CONFIG_FILE = "training_config.yaml"
LOSS_CURVE_FILE = "loss_curve.png"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("trl", "peft", "transformers", "torch", "bitsandbytes", "datasets"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def plot_loss_curve(log_history: Sequence[Mapping], target: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    train = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e]
    evals = eval_points(log_history)
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", marker=".")
    if evals:
        ax.plot(*zip(*evals), label="eval loss", marker="o")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


@dataclasses.dataclass
class TrainingResult:
    """What a run produced: where the adapter is and what it measured."""

    name: str
    method: str
    path: Path
    metadata: dict
    wall_seconds: float

    def summary(self) -> str:
        metrics = self.metadata["metrics"]
        lines = [f"Trained '{self.name}' ({self.method}) in {self.wall_seconds:.0f} s -> {self.path}"]
        before, after = metrics.get("eval_loss_before"), metrics.get("eval_loss_after")
        if before is not None and after is not None:
            trend = "down" if after < before else "NOT down"
            lines.append(f"  eval loss        {before:.4f} -> {after:.4f} ({trend})")
        for key, value in sorted(metrics.items()):
            if key in ("eval_loss_before", "eval_loss_after") or value is None:
                continue
            lines.append(f"  {key:<16} {value:.4f}" if isinstance(value, float) else f"  {key:<16} {value}")
        for name, info in self.metadata.get("datasets", {}).items():
            lines.append(f"  data {name:<11} {info.get('rows')} (fingerprint {info.get('fingerprint')})")
        lines.append(f"  base model       {self.metadata['base_model']}")
        return "\n".join(lines)


def build_metadata(*, settings: Settings, method: str, name: str, run: RunSettings, config: TrainingConfig,
                   datasets: Mapping[str, Mapping], metrics: Mapping[str, Any], inputs_fingerprint: str,
                   extra: Mapping[str, Any] | None = None, precision: Precision | None = None) -> dict:
    """The adapter's `wayfarer_adapter.json`: the engine checks `base_model`; the pipeline compares
    `inputs_fingerprint` to decide whether the adapter is current."""
    model_config = ModelConfig.from_settings(settings)
    return {
        "base_model": model_config.base,
        "adapter": name,
        "method": method,
        "training_config": {"seed": config.seed, "compute_dtype": config.compute_dtype,
                            "quantization": config.quantization,
                            "lora": dataclasses.asdict(config.lora), method: dataclasses.asdict(run),
                            "min_answer_tokens": config.min_answer_tokens},
        "system_prompt": model_config.system_prompt,
        "datasets": dict(datasets),
        "metrics": dict(metrics),
        "inputs_fingerprint": inputs_fingerprint,
        "precision": precision.to_dict() if precision else None,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "profile": settings.profile,
        "versions": library_versions(),
        **(extra or {}),
    }


def inputs_fingerprint(settings: Settings, method: str, config: TrainingConfig, run: RunSettings,
                       data_fingerprints: Mapping[str, str], extra: Any = None) -> str:
    """Everything the adapter depends on: base, system prompt, data, hyper-parameters."""
    model_config = ModelConfig.from_settings(settings)
    return config_hash({
        "base": model_config.base, "system_prompt": model_config.system_prompt, "method": method,
        "seed": config.seed, "compute_dtype": config.compute_dtype, "quantization": config.quantization,
        "lora": dataclasses.asdict(config.lora),
        "run": dataclasses.asdict(run), "min_answer_tokens": config.min_answer_tokens,
        "data": dict(data_fingerprints), "extra": extra,
    })


def read_metadata(adapter_dir: Path) -> dict | None:
    try:
        return json.loads((Path(adapter_dir) / ADAPTER_METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_adapter(target: Path, save_weights: Callable[[Path], None], metadata: dict,
                  log_history: Sequence[Mapping]) -> Path:
    """Write weights + metadata + config + loss curve into a scratch folder, then swap it in."""
    target = Path(target)
    # A crash while writing leaves the old adapter, never a half one (fsutils.replacing_folder).
    with replacing_folder(target) as scratch:
        save_weights(scratch)
        (scratch / ADAPTER_METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        (scratch / TRAINING_CONFIG_FILE).write_text(yaml.safe_dump(metadata["training_config"], sort_keys=True))
        (scratch / "log_history.json").write_text(json.dumps(list(log_history), indent=1) + "\n")
        plot_loss_curve(log_history, scratch / LOSS_CURVE_FILE, f"{metadata['adapter']} ({metadata['method']})")
    return target
