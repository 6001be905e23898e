"""`python -m chatbot doctor`: which machine this is, as far as the model's speed and numbers go.

The same model gives different speeds and slightly different logits on different CPUs: the
instruction set torch dispatches to (AVX2, AVX-512, AMX), whether the CPU has bf16 units, and
whether oneDNN may use them decide which kernels run. Every figure in this project (bench/,
training metadata) is only meaningful next to the machine it was measured on, so this module
names the machine in one place, without loading the model: `machine_summary()` returns the
facts as a dict and as one line.
"""

from __future__ import annotations

import os
from pathlib import Path

# CPU flags (as /proc/cpuinfo spells them) that change which kernels torch and oneDNN use.
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _amx_usable(flags: set[str]) -> bool:
    """Whether torch may run AMX tiles here: torch's own check where this build has one, else
    the CPU flag (the kernel must also grant the tile state, which torch's check includes)."""
    import torch

    cpu = getattr(torch._C, "_cpu", None)
    check = getattr(cpu, "_is_amx_tile_supported", None)
    if check is not None:
        return bool(check())
    return "amx_tile" in flags and torch.backends.mkldnn.is_available()


def _onednn_bf16(torch) -> bool | None:
    """Whether oneDNN runs bf16 here at all: on x86 it says yes for any AVX-512 CPU, emulating
    bf16 where the CPU has no bf16 units, so this is not the hardware answer (see bf16_units)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def machine_summary() -> tuple[dict, str]:
    """(facts about the CPU and torch, one line naming the machine), without loading the model."""
    import torch

    from chatbot.calibration import cpu_model

    flags = cpu_flags()
    facts = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_flags": [flag for flag in RELEVANT_FLAGS if flag in flags],
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_available": torch.backends.mkldnn.is_available(),
        "onednn_enabled": bool(torch.backends.mkldnn.enabled),
        "amx_usable": _amx_usable(flags),
        # bf16 multiply-add in hardware (AVX512-BF16 or AMX-BF16): where bf16 matmuls are fast.
        "bf16_units": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "onednn_bf16": _onednn_bf16(torch),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    line = (
        f"{facts['cpu_model']}, {facts['cpu_cores']} cores, torch {facts['torch_version']} "
        f"({facts['cpu_capability']} kernels, {facts['torch_threads']} threads), "
        f"bf16 units: {'yes' if facts['bf16_units'] else 'no'}, AMX: {'yes' if facts['amx_usable'] else 'no'}"
        + (f", GPU: {facts['cuda']}" if facts["cuda"] else "")
    )
    return facts, line


def weight_format(settings) -> dict:
    """The configured weight format and compute dtypes; for `auto`, what this machine's cached
    calibration chose (chatbot/calibration.py), if it has measured one. Nothing is loaded."""
    import json

    from chatbot.calibration import CACHE_FILE, cpu_model

    model = settings.config.model
    chosen = {
        "quantization": model.quantization,
        "compute_dtype": model.compute_dtype,
        "device": model.device,
        "training_compute_dtype": settings.config.training.compute_dtype or model.compute_dtype,
    }
    if chosen["quantization"] == "auto":
        import torch

        chosen["auto_choice"] = "not measured yet on this machine (the first start measures it)"
        try:
            entries = json.loads((settings.path("models") / CACHE_FILE).read_text())
        except (OSError, ValueError):
            entries = {}
        machine = [cpu_model(), f"{os.cpu_count()} cores", f"torch {torch.__version__}"]
        for key, entry in entries.items():
            parts = key.split(" | ")
            if parts[:3] == machine and parts[-1] == chosen["compute_dtype"]:
                chosen["auto_choice"] = f"{entry['quantization']}: {entry['reason']}"
    return chosen


def report(settings) -> dict:
    """Everything `doctor` prints: the machine and the weight format the settings choose."""
    facts, line = machine_summary()
    return {**facts, "summary": line, "profile": settings.profile, "model": weight_format(settings)}


def format_report(facts: dict) -> str:
    yes_no = {True: "yes", False: "no", None: "none"}
    model = facts["model"]
    lines = [
        f"machine:          {facts['summary']}",
        f"cpu model:        {facts['cpu_model']} ({facts['cpu_cores']} cores)",
        f"cpu flags:        {' '.join(facts['cpu_flags']) or '(none of ' + ', '.join(RELEVANT_FLAGS) + ')'}",
        f"torch:            {facts['torch_version']}, {facts['torch_threads']} threads",
        f"cpu capability:   {facts['cpu_capability']}",
        f"oneDNN (mkldnn):  available: {yes_no[facts['onednn_available']]}, enabled: {yes_no[facts['onednn_enabled']]}",
        f"AMX usable:       {yes_no[facts['amx_usable']]}",
        f"bf16 units:       {yes_no[facts['bf16_units']]} (oneDNN bf16, emulated without units: {yes_no[facts['onednn_bf16']]})",
        f"GPU:              {facts['cuda'] or 'none'}",
        f"profile:          {facts['profile']}",
        f"weight format:    {model['quantization']} (model.quantization), compute dtype {model['compute_dtype']}, "
        f"device {model['device']}",
        f"training dtype:   {model['training_compute_dtype']}",
    ]
    if "auto_choice" in model:
        lines.append(f"auto chooses:     {model['auto_choice']}")
    return "\n".join(lines)
