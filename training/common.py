"""What every trainer shares: the 4-bit base, the LoRA config, the datasets, and the adapter folder.

An adapter folder is written into a private scratch folder next to its target and swapped in
at the very end, so a crashed or interrupted run never leaves a half-written adapter where the
chat engine would load it; the previous adapter stays until the new one is complete.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from modeling.adapters import ADAPTER_METADATA_FILE
from modeling.base_model import LoadedBase, ModelConfig, load_base
from settings import Settings
from training.config import LoraSettings, RunSettings, TrainingConfig, config_hash

TRAINING_CONFIG_FILE = "training_config.yaml"
LOSS_CURVE_FILE = "loss_curve.png"
TRAIN, VALIDATION = "train", "validation"


class TrainingError(RuntimeError):
    """A training step cannot run as asked; the message says why and what to do."""


# ------------------------------------------------------------------------------------ precision
def cpu_has_bf16_units() -> bool:
    """The CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX-BF16), read from the kernel's
    CPU flags: torch's get_cpu_capability() says "AVX512" for both kinds of AVX-512 CPUs."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclasses.dataclass(frozen=True)
class Precision:
    """How one training run computes: recorded in the adapter's metadata.

    quantization nf4: the QLoRA recipe (4-bit base, matmuls in compute_dtype). none: the base in
    float32 with LoRA on top, and bf16 autocast (`autocast`) when compute_dtype is bfloat16."""

    quantization: str
    base_weights: str
    compute_dtype: str
    autocast: bool
    device: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        recipe = (f"QLoRA: LoRA on the 4-bit NF4 base, matmuls in {self.compute_dtype}" if self.quantization == "nf4"
                  else "LoRA on the float32 base (not QLoRA: the 4-bit base is the gpu profile's recipe)"
                  + (", bf16 autocast" if self.autocast else ", fp32 compute"))
        return {**dataclasses.asdict(self), "recipe": recipe}


def training_precision(settings: Settings, config: TrainingConfig, run: RunSettings) -> Precision:
    """Resolve training.compute_dtype (auto: the fastest the hardware supports) at run time.

    Measured on the 2-core AMD EPYC (AVX-512 + AVX512-BF16, no AMX), a LoRA step of SmolLM2-135M
    (batch 2) takes ~5.5 s at 512 tokens and ~8 s at 1,024 with bf16 autocast, vs ~6.5-12 s and
    ~20 s in fp32; an NF4 base is slower still on a CPU (bitsandbytes de-quantizes every matmul)."""
    from modeling.base_model import resolve_device

    model_config = ModelConfig.from_settings(settings)
    device = resolve_device(model_config.device)
    requested = config.compute_dtype or model_config.compute_dtype
    if requested == "auto":
        if device == "cpu":
            bf16 = cpu_has_bf16_units()
            reason = ("auto: the CPU has bf16 units (avx512_bf16/amx_bf16)" if bf16
                      else "auto: the CPU has no bf16 units, fp32 is faster")
        else:
            import torch

            bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
            reason = f"auto: {device} {'supports' if bf16 else 'lacks'} bf16"
        dtype = "bfloat16" if bf16 else "float32"
    else:
        dtype, reason = requested, f"configured: {requested}"
    if config.quantization == "nf4":
        return Precision("nf4", "nf4", dtype, bool(run.bf16), device, reason)
    return Precision("none", "float32", dtype, bool(run.bf16) or dtype == "bfloat16", device, reason)


# ------------------------------------------------------------------------------------ model
def training_model_config(settings: Settings, config: TrainingConfig, precision: Precision) -> ModelConfig:
    """The served model's config with the training dtype: the 4-bit matmul dtype for nf4,
    float32 weights (autocast does the rest) without quantization."""
    dtype = precision.compute_dtype if precision.quantization == "nf4" else "float32"
    return dataclasses.replace(ModelConfig.from_settings(settings), compute_dtype=dtype)


def _prepare_for_training(model, precision: Precision, run: RunSettings):
    if precision.quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        # Freezes the quantized weights and keeps norms in fp32: the QLoRA paper's recipe.
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=run.gradient_checkpointing)
    for param in model.parameters():
        param.requires_grad_(False)
    if run.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def load_training_base(settings: Settings, config: TrainingConfig, run: RunSettings) -> LoadedBase:
    """The base model as training.quantization says: 4-bit NF4 with double quantization (QLoRA)
    or float32, ready for LoRA training. `loaded.precision` says which."""
    precision = training_precision(settings, config, run)
    loaded = load_base(training_model_config(settings, config, precision), settings.path("models"),
                       quantization=precision.quantization)
    loaded.model = _prepare_for_training(loaded.model, precision, run)
    loaded.precision = precision
    return loaded


def load_reward_base(settings: Settings, config: TrainingConfig, run: RunSettings):
    """The same base checkpoint as a sequence classifier (one score), loaded like the others."""
    from transformers import AutoModelForSequenceClassification

    precision = training_precision(settings, config, run)
    loaded = load_base(
        training_model_config(settings, config, precision), settings.path("models"),
        quantization=precision.quantization, model_class=AutoModelForSequenceClassification, num_labels=1,
    )
    model, tokenizer = loaded.model, loaded.tokenizer
    model.config.pad_token_id = tokenizer.pad_token_id
    model = _prepare_for_training(model, precision, run)
    return model, tokenizer, loaded.device, precision


def progress_callback(name: str, log: Callable[[str], None] = print):
    """A trainer callback printing one line per logging step: step/total, elapsed, ETA."""
    from transformers import TrainerCallback

    class ProgressPrinter(TrainerCallback):
        started = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()
            log(f"{name}: training {state.max_steps} optimizer steps")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.max_steps or self.started is None:
                return
            elapsed = time.monotonic() - self.started
            done = state.global_step
            eta = elapsed / done * (state.max_steps - done) if done else float("nan")
            logs = logs or {}
            loss = logs.get("loss", logs.get("eval_loss"))
            kind = "eval loss" if "eval_loss" in logs else "loss"
            loss_text = f", {kind} {loss:.3f}" if isinstance(loss, (int, float)) else ""
            log(f"{name}: step {done}/{state.max_steps}, {_minutes(elapsed)} elapsed, ETA {_minutes(eta)}{loss_text}")

    return ProgressPrinter()


def _minutes(seconds: float) -> str:
    if seconds != seconds:  # nan: no step done yet
        return "?"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def lora_config(lora: LoraSettings, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    target = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target,
                      bias="none", task_type=task_type)


def training_arguments(config_cls, run: RunSettings, output_dir: Path, seed: int, device: str,
                       precision: Precision | None = None, **extra):
    """trl's config for one run, from the profile's hyper-parameters. Nothing is checkpointed:
    the adapter is written once, complete, at the end."""
    arguments = dict(
        output_dir=str(output_dir),
        learning_rate=run.learning_rate,
        num_train_epochs=run.epochs,
        max_steps=run.max_steps,
        per_device_train_batch_size=run.batch_size,
        per_device_eval_batch_size=run.batch_size,
        gradient_accumulation_steps=run.grad_accumulation,
        warmup_steps=run.warmup_ratio,
        lr_scheduler_type=run.lr_scheduler,
        optim=run.optimizer,
        weight_decay=run.weight_decay,
        bf16=precision.autocast if precision is not None else run.bf16,
        disable_tqdm=True,  # ProgressPrinter prints one line per logging step instead
        gradient_checkpointing=run.gradient_checkpointing,
        eval_strategy="steps",
        eval_steps=run.eval_steps,
        eval_on_start=True,  # the "before" point of the eval-loss curve
        logging_steps=run.logging_steps,
        logging_first_step=True,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
    )
    arguments.update(extra)
    return config_cls(**arguments)


# ------------------------------------------------------------------------------------ data
def dataset_fingerprint(path: Path) -> str:
    """A hash of a saved dataset's Arrow files: the builder writes byte-identical files for the
    same input, so equal fingerprints mean equal data."""
    # Only the saved shards: `map` on a dataset loaded from disk may add cache-*.arrow files.
    files = sorted(p for p in Path(path).rglob("data-*.arrow"))
    if not files:
        raise TrainingError(f"no dataset at {path}")
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def load_splits(datasets_dir: Path, name: str, *, step_hint: str = "python -m training build"):
    """A DatasetDict with train and validation splits, or a clear error."""
    from datasets import DatasetDict, load_from_disk

    path = Path(datasets_dir) / name
    if not path.is_dir():
        raise TrainingError(f"no {name} dataset at {path}; build it with `{step_hint}`")
    try:
        # In memory: the small datasets are mapped (system prompt, tokens) without writing cache
        # files into the dataset folder.
        loaded = load_from_disk(str(path), keep_in_memory=True)
    except Exception as err:  # datasets raises several unrelated types for a broken folder
        raise TrainingError(f"the {name} dataset at {path} is unreadable: {err}") from err
    if not isinstance(loaded, DatasetDict) or TRAIN not in loaded or VALIDATION not in loaded:
        raise TrainingError(f"the {name} dataset at {path} must be a DatasetDict with train and validation splits")
    return loaded


def check_no_golden(datasets_dir: Path, *datasets) -> None:
    """Refuse to train on any row from a held-out (golden) thread."""
    from corpus import load_golden_thread_ids

    golden = load_golden_thread_ids(Path(datasets_dir))
    for dataset in datasets:
        if dataset is None or "thread_id" not in dataset.column_names:
            continue
        leaked = golden.intersection(dataset["thread_id"])
        if leaked:
            raise TrainingError(f"{len(leaked)} golden (held-out) threads are in a training set, e.g. "
                                f"{sorted(leaked)[:3]}; rebuild the datasets with `python -m training build`")


def sample_rows(dataset, max_rows: int | None, seed: int):
    """A seeded sample of at most `max_rows` rows (all rows, in order, when unlimited)."""
    if max_rows is None or len(dataset) <= max_rows:
        return dataset
    return dataset.shuffle(seed=seed).select(range(max_rows))


def to_prompt_completion(dataset, system_prompt: str, documents_system_prompt: str | None = None):
    """[user, assistant] messages -> trl's conversational prompt/completion with the served system
    prompt, so the model learns in exactly the context the chatbot gives it, and trl computes the
    loss on the completion (the assistant turn) only. Rows with documents (a non-empty `doc_ids`,
    RAFT) get `documents_system_prompt`, as the chatbot does when it puts documents in a turn."""
    has_docs = "doc_ids" in dataset.column_names and documents_system_prompt is not None

    def convert(row):
        turns = row["messages"]
        if len(turns) != 2 or turns[0]["role"] != "user" or turns[1]["role"] != "assistant":
            raise TrainingError(f"expected [user, assistant] messages, got roles {[t['role'] for t in turns]}")
        text = documents_system_prompt if has_docs and row["doc_ids"] else system_prompt
        system = [{"role": "system", "content": text}] if text else []
        return {"prompt": system + [turns[0]], "completion": [turns[1]]}

    return dataset.map(convert, remove_columns=dataset.column_names, desc="adding the system prompt")


def with_system_prompt(dataset, system_prompt: str, documents_system_prompt: str | None = None):
    """Preference rows: the system prompt in front of the user turn (chosen/rejected unchanged).
    A user turn holding RAFT documents (built pairs and arena battles answered with retrieval)
    gets `documents_system_prompt`, as the chatbot serves it."""
    from raft import has_documents

    def convert(row):
        prompt = list(row["prompt"])
        if prompt and prompt[0]["role"] == "system":  # an exported battle that kept its system prompt
            return {"prompt": prompt}
        with_docs = documents_system_prompt is not None and any(
            turn["role"] == "user" and has_documents(turn["content"]) for turn in prompt)
        text = documents_system_prompt if with_docs else system_prompt
        return {"prompt": ([{"role": "system", "content": text}] if text else []) + prompt}

    if not system_prompt and not documents_system_prompt:
        return dataset
    return dataset.map(convert, desc="adding the system prompt")


def prompt_tokens(tokenizer, prompt: Sequence[Mapping]) -> int:
    ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def drop_prompts_too_long(dataset, tokenizer, max_length: int, min_answer_tokens: int) -> tuple[Any, int]:
    """Drop rows whose prompt leaves fewer than `min_answer_tokens` answer tokens within max_length:
    truncation would cut their whole answer away and they would teach nothing."""
    limit = max_length - min_answer_tokens
    keep = [i for i, prompt in enumerate(dataset["prompt"]) if prompt_tokens(tokenizer, prompt) <= limit]
    return dataset.select(keep), len(dataset) - len(keep)


# ------------------------------------------------------------------------------------ output
def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("trl", "peft", "transformers", "torch", "bitsandbytes", "datasets"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def eval_points(log_history: Sequence[Mapping], key: str = "eval_loss") -> list[tuple[int, float]]:
    return [(int(e["step"]), float(e[key])) for e in log_history if key in e]


def final_evaluation(trainer) -> dict:
    """The eval metrics at the last step: the periodic evaluation's when it ran there, else a new one."""
    history = trainer.state.log_history
    last = [e for e in history if "eval_loss" in e and int(e.get("step", -1)) == trainer.state.global_step]
    if last:
        return dict(last[-1])
    return trainer.evaluate()


def loss_summary(log_history: Sequence[Mapping]) -> dict[str, float | None]:
    """Eval loss before (step 0) and after training, and the last logged train loss."""
    evals = eval_points(log_history)
    train = [float(e["loss"]) for e in log_history if "loss" in e]
    return {
        "eval_loss_before": evals[0][1] if evals else None,
        "eval_loss_after": evals[-1][1] if evals else None,
        "train_loss_first": train[0] if train else None,
        "train_loss_last": train[-1] if train else None,
    }


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
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=target.parent))
    try:
        save_weights(scratch)
        (scratch / ADAPTER_METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        (scratch / TRAINING_CONFIG_FILE).write_text(yaml.safe_dump(metadata["training_config"], sort_keys=True))
        (scratch / "log_history.json").write_text(json.dumps(list(log_history), indent=1) + "\n")
        plot_loss_curve(log_history, scratch / LOSS_CURVE_FILE, f"{metadata['adapter']} ({metadata['method']})")
        # Swap: move the old adapter aside, the new one in, then delete the old one. A crash in
        # between leaves the old adapter in the hidden .<name>-old-* folder, never a half one.
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent)) / target.name
            os.replace(target, old)
        os.replace(scratch, target)
        if old is not None:
            shutil.rmtree(old.parent, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start


def set_seed(seed: int) -> None:
    from transformers import set_seed as hf_set_seed

    hf_set_seed(seed)
