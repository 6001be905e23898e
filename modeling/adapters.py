"""Named LoRA adapters on the one base model: check a folder, then attach it under its name.

Every check that can fail runs *before* peft injects layers into the shared base model, so a
bad adapter folder is refused with a clear reason and never leaves the served model half-changed.
"""

from __future__ import annotations

import json
from pathlib import Path

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
# Written by `python -m training ...` next to the weights: base model id, config, metrics.
ADAPTER_METADATA_FILE = "wayfarer_adapter.json"
BASE_ADAPTER = "base"  # the name under which the bare base model is served
PEFT_BASE_NAME = "__base__"  # peft's name for "no adapter" in a per-row adapter_names batch


class AdapterLoadError(RuntimeError):
    """An adapter folder cannot be served; the message says why and what to do."""


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterLoadError(f"{what} {path} is unreadable or corrupt: {err}") from err
    if not isinstance(data, dict):
        raise AdapterLoadError(f"{what} {path} is corrupt: expected a JSON object")
    return data


def _read_weights(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise several unrelated types
        raise AdapterLoadError(f"adapter weights {path} are corrupt: {err}") from err


def _module_shape(module) -> tuple[int, int] | None:
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    return None


def check_adapter_dir(name: str, path: Path, base_model, base_model_id: str) -> None:
    """Refuse a folder that is missing, corrupt, or made for another base model."""
    if not path.is_dir():
        raise AdapterLoadError(
            f"adapter '{name}' not found at {path}; train it with `python -m training {name}`"
        )
    config = _read_json(path / ADAPTER_CONFIG_FILE, "adapter config") if (
        path / ADAPTER_CONFIG_FILE
    ).exists() else None
    if config is None:
        raise AdapterLoadError(f"adapter '{name}' at {path} has no {ADAPTER_CONFIG_FILE}: not a peft adapter folder")
    if config.get("peft_type") not in (None, "LORA"):
        raise AdapterLoadError(f"adapter '{name}' is a {config.get('peft_type')} adapter; only LoRA is served")
    metadata_path = path / ADAPTER_METADATA_FILE
    if metadata_path.exists():
        recorded = _read_json(metadata_path, "adapter metadata").get("base_model")
        if recorded and recorded != base_model_id:
            raise AdapterLoadError(
                f"adapter '{name}' was trained on base model {recorded!r}, but this app serves "
                f"{base_model_id!r}; retrain it or change model.base"
            )
    weights_path = next((path / f for f in ADAPTER_WEIGHT_FILES if (path / f).exists()), None)
    if weights_path is None:
        raise AdapterLoadError(f"adapter '{name}' at {path} has no weights ({' or '.join(ADAPTER_WEIGHT_FILES)})")
    weights = _read_weights(weights_path)
    if not weights:
        raise AdapterLoadError(f"adapter '{name}' weights {weights_path} are empty")
    _check_shapes(name, weights, base_model)


def _check_shapes(name: str, weights: dict, base_model) -> None:
    """LoRA A is (r, in_features) and B is (out_features, r) of the layer they adapt."""
    # Once a first adapter is attached the model is a PeftModel: compare against the layers of
    # the model underneath, whose names are the ones adapter files use.
    inner = base_model.get_base_model() if hasattr(base_model, "get_base_model") else base_model
    modules = dict(inner.named_modules())
    for key, tensor in weights.items():
        for part, axis in ((".lora_A.", 1), (".lora_B.", 0)):
            if part not in key:
                continue
            module_name = key.split(part)[0].removeprefix("base_model.model.")
            module = modules.get(module_name)
            if module is None:
                raise AdapterLoadError(
                    f"adapter '{name}' adapts layer {module_name!r}, which the base model does not have: "
                    "it was made for another architecture"
                )
            shape = _module_shape(getattr(module, "base_layer", module))
            expected = None if shape is None else (shape[0] if axis == 1 else shape[1])
            if expected is not None and tensor.ndim == 2 and tensor.shape[axis] != expected:
                raise AdapterLoadError(
                    f"adapter '{name}' does not fit the base model: layer {module_name!r} has "
                    f"{expected} features, the adapter expects {tensor.shape[axis]}"
                )


def attach_adapter(model, name: str, path: Path, dtype=None):
    """Attach a checked adapter under `name`; returns the (possibly new) PeftModel.

    peft keeps adapter weights in float32 by default; serving them in the model's compute dtype
    (`dtype`, e.g. bfloat16) halves what each adapter adds to memory and matches the dtype the
    4-bit layers compute in.
    """
    from peft import PeftModel

    try:
        if isinstance(model, PeftModel):
            model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        else:
            model = PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False)
    except Exception as err:  # peft raises ValueError, KeyError, RuntimeError...
        raise AdapterLoadError(f"adapter '{name}' at {path} could not be attached: {err}") from err
    if dtype is not None:
        for param_name, param in model.named_parameters():
            if "lora_" in param_name and f".{name}." in param_name and param.dtype != dtype:
                param.data = param.data.to(dtype)
    return model


# ------------------------------------------------------------------------------------ versions
# An adapter retrained while the app serves (rlhf, by `python -m retraining`) lives in
# numbered folders, `<adapters>/<name>/<version>/`, and the file `<name>/CURRENT` names the one
# that is served. A new version is written whole into its own folder first; only the atomic
# rewrite of CURRENT publishes it, so a run killed at any point leaves the served one as it was.
# A flat folder (`<name>/adapter_config.json`, the layout before versions) is version 0.
VERSION_POINTER_FILE = "CURRENT"
LEGACY_VERSION = 0


def versioned_name(name: str, version: int | None) -> str:
    """How a version is shown and rated: `rlhf@3`; a flat (unversioned) adapter keeps its name."""
    return name if not version else f"{name}@{version}"


def adapter_versions_in(folder: Path) -> list[int]:
    """The version folders under an adapter's folder, oldest first (complete or not)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def current_adapter_version(folder: Path) -> tuple[int | None, Path]:
    """(version, folder to load) of the adapter at `folder`: the version CURRENT names, else
    LEGACY_VERSION for a flat adapter folder, else (None, folder) when nothing is published."""
    folder = Path(folder)
    pointer = folder / VERSION_POINTER_FILE
    try:
        text = pointer.read_text().strip()
    except OSError:
        text = ""
    if text.isdigit():
        return int(text), folder / text
    if (folder / ADAPTER_CONFIG_FILE).exists():
        return LEGACY_VERSION, folder
    return None, folder


def current_adapter_dir(folder: Path) -> Path:
    """The folder holding the served version's files (the flat folder itself before versions)."""
    return current_adapter_version(folder)[1]


def next_adapter_version(folder: Path) -> int:
    """A version number above every folder and the published one (1 for the first)."""
    published = current_adapter_version(folder)[0] or 0
    return max([published, *adapter_versions_in(folder)], default=0) + 1


def publish_adapter_version(folder: Path, version: int) -> Path:
    """Serve `version` from now on: one atomic rewrite of CURRENT (engines pick it up on refresh)."""
    from fsutils import write_text_atomic

    target = Path(folder) / str(int(version))
    if not (target / ADAPTER_CONFIG_FILE).exists():
        raise AdapterLoadError(f"cannot publish version {version}: {target} holds no complete adapter")
    write_text_atomic(Path(folder) / VERSION_POINTER_FILE, f"{int(version)}\n")
    return target
