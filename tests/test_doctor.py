"""`python -m chatbot doctor` names the machine, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from settings import load_settings

REPO = Path(__file__).resolve().parents[1]


def _doctor(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chatbot", "--profile", "local", "doctor", *args],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env}, capture_output=True, text=True, timeout=300,
    )


def _cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_doctor_prints_the_cpu_torch_and_the_weight_format():
    import torch

    done = _doctor()
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for label in ("machine:", "cpu model:", "cpu flags:", "torch:", "cpu capability:", "oneDNN (mkldnn):",
                  "AMX usable:", "bf16 units:", "weight format:"):
        assert label in out, f"{label} missing from:\n{out}"
    assert f"cpu capability:   {torch.backends.cpu.get_cpu_capability()}" in out
    assert torch.__version__ in out
    # The local profile's weight format and compute dtype, as wayfarer.yaml sets them.
    model = load_settings(profile="local").section("model")
    assert f"weight format:    {model['quantization']} (model.quantization), compute dtype {model['compute_dtype']}" in out
    assert "Loading weights" not in done.stderr, "the doctor must not load the model"


def test_doctor_json_matches_this_machine_and_says_what_auto_means():
    import torch

    done = _doctor("--json", WAYFARER__MODEL__QUANTIZATION="auto", WAYFARER__MODEL__COMPUTE_DTYPE="float32",
                   WAYFARER__RUNTIME__TORCH_THREADS="1")
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    flags = _cpuinfo_flags()
    relevant = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}
    assert set(facts["cpu_flags"]) == flags & relevant
    assert facts["cpu_model"] and facts["cpu_cores"] == os.cpu_count()
    assert facts["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert facts["torch_version"] == torch.__version__ and facts["torch_threads"] == 1
    assert facts["onednn_available"] == torch.backends.mkldnn.is_available()
    assert isinstance(facts["amx_usable"], bool) and isinstance(facts["bf16_units"], bool)
    if "amx_tile" not in flags:
        assert facts["amx_usable"] is False
    if not flags & {"avx512_bf16", "amx_bf16"}:
        assert facts["bf16_units"] is False
    assert facts["cpu_model"] in facts["summary"] and "\n" not in facts["summary"]
    assert facts["model"]["quantization"] == "auto" and facts["model"]["auto_choice"]
    assert facts["model"]["compute_dtype"] == "float32"


def test_machine_summary_is_a_dict_and_one_line_without_loading_a_model():
    from chatbot.doctor import machine_summary

    facts, line = machine_summary()
    assert {"cpu_model", "cpu_flags", "cpu_capability", "torch_version", "bf16_units", "amx_usable"} <= set(facts)
    assert facts["cpu_model"] in line and facts["cpu_capability"] in line and "\n" not in line
