"""How a training run computes (training.compute_dtype and training.quantization resolved on this
machine at run time), recorded in the adapter's metadata."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from modeling.base_model import ModelConfig
from settings import Settings
from training.config import RunSettings, TrainingConfig


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
    float32 with LoRA on top, and bf16 autocast (`autocast`) when compute_dtype is bfloat16.
    `attention` is transformers' attn_implementation (the same math, other kernels)."""

    quantization: str
    base_weights: str
    compute_dtype: str
    autocast: bool
    device: str
    reason: str
    attention: str

    def to_dict(self) -> dict[str, Any]:
        recipe = (f"QLoRA: LoRA on the 4-bit NF4 base, matmuls in {self.compute_dtype}" if self.quantization == "nf4"
                  else "LoRA on the float32 base (not QLoRA: the 4-bit base is the gpu profile's recipe)"
                  + (", bf16 autocast" if self.autocast else ", fp32 compute"))
        return {**dataclasses.asdict(self), "recipe": f"{recipe}; {self.attention} attention"}


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
        return Precision("nf4", "nf4", dtype, bool(run.bf16), device, reason, config.attention)
    return Precision("none", "float32", dtype, bool(run.bf16) or dtype == "bfloat16", device, reason, config.attention)
