"""Hugging Face Spaces: the README header is valid Spaces metadata, ZeroGPU wrapping is a no-op
off a Space, and the `gpu` profile's code path (hub model id, 4-bit, persistent home) runs end to
end with a tiny local stand-in for the hub model."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MODELS_CACHE = REPO / "var" / "models"

# https://huggingface.co/docs/hub/spaces-config-reference (suggested_hardware)
SPACES_HARDWARE = {
    "cpu-basic", "cpu-upgrade", "t4-small", "t4-medium", "l4x1", "l4x4", "l40sx1", "l40sx4", "l40sx8",
    "a10g-small", "a10g-large", "a10g-largex2", "a10g-largex4", "a100-large", "h100", "h100x8", "zero-a10g",
}
GPU_HARDWARE = SPACES_HARDWARE - {"cpu-basic", "cpu-upgrade"}


def readme_header() -> dict:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.DOTALL)
    assert match, "README.md must start with a '---' front matter block"
    return yaml.safe_load(match.group(1))


def test_readme_header_is_valid_spaces_metadata():
    import gradio

    header = readme_header()
    assert header["sdk"] == "gradio"
    assert header["app_file"] == "app.py" and (REPO / header["app_file"]).is_file()
    assert header["sdk_version"] == gradio.__version__, "sdk_version must be the pinned, installed gradio"
    python = header["python_version"]
    assert isinstance(python, str), "quote python_version, or YAML reads 3.10 as 3.1"
    assert re.fullmatch(r"3\.\d+", python) and int(python.split(".")[1]) >= 11  # pyproject: >=3.11
    assert header["suggested_hardware"] in GPU_HARDWARE
    assert re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", header["license"]), header["license"]
    assert header.get("title") and len(header.get("short_description", "")) <= 60


def test_gpu_task_is_the_function_itself_off_a_space(monkeypatch):
    from chatbot.spaces import gpu_task, on_zero_gpu

    def answer(x):
        return x + 1

    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not on_zero_gpu()
    assert gpu_task(answer) is answer
    assert gpu_task(duration=120)(answer) is answer
    # On a Space without ZeroGPU's package (fixed hardware) nothing is wrapped either.
    monkeypatch.setenv("SPACE_ID", "someone/wayfarer")
    if importlib.util.find_spec("spaces") is None:
        assert not on_zero_gpu()
        assert gpu_task(answer) is answer


def test_gpu_task_uses_spaces_gpu_on_a_zero_gpu_space(monkeypatch, tmp_path):
    """The `spaces` package exists only on Spaces; a stand-in with its decorator API is put on
    sys.path to check that both call forms reach `spaces.GPU`."""
    (tmp_path / "spaces.py").write_text(
        textwrap.dedent(
            """
            calls = []
            def GPU(fn=None, duration=None):
                def mark(function):
                    calls.append((function.__name__, duration))
                    function.on_gpu = True
                    return function
                return mark(fn) if fn is not None else mark
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "spaces", raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/wayfarer")
    from chatbot.spaces import gpu_task, on_zero_gpu

    assert on_zero_gpu()

    @gpu_task
    def answer():
        return "ok"

    @gpu_task(duration=90)
    def battle():
        return "ok"

    import spaces

    assert answer.on_gpu and battle.on_gpu and answer() == "ok"
    assert spaces.calls == [("answer", None), ("battle", 90)]
    monkeypatch.delitem(sys.modules, "spaces")


def _fake_hub_cache(cache: Path, repo_id: str, checkpoint: Path) -> None:
    """A Hugging Face hub cache holding `repo_id` (files linked to the local checkpoint), laid out
    the way huggingface_hub stores downloads, so the model loads by hub id with no network."""
    commit = "0" * 40
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    for file in checkpoint.iterdir():
        (snapshot / file.name).symlink_to(file.resolve())


def _cached_checkpoint() -> Path:
    found = sorted(p for p in MODELS_CACHE.glob("*") if (p / "config.json").exists())
    if not found:
        pytest.skip("no converted base checkpoint in var/models yet (run the engine tests first)")
    return found[0]


GPU_PROFILE_SCRIPT = """
import json
from settings import apply_runtime, load_settings
settings = load_settings()  # profile and overrides from the environment, as on a Space
apply_runtime(settings)
from arena.store import open_vote_store
from chatbot import ChatEngine
engine = ChatEngine.from_settings(settings)
answer = engine.complete([{"role": "user", "content": "Best month for Kyoto?"}], temperature=0)
votes = open_vote_store(settings)
print(json.dumps({
    "profile": settings.profile,
    "base": engine.base_model_id,
    "quantized": engine.quantized,
    "weights_4bit": any(type(m).__name__ == "Linear4bit" for m in engine._model.modules()),
    "device": engine.device,
    "adapters": engine.adapters,
    "adapter_errors": sorted(engine.adapter_errors),
    "answer": answer,
    "votes": str(votes.path),
    "server_name": settings.get("ui.server_name"),
}))
"""


def test_gpu_profile_serves_a_hub_model_in_4bit_with_a_local_stand_in(tmp_path):
    repo_id = "wayfarer-test/tiny-travel-llm"
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, repo_id, _cached_checkpoint())
    home = tmp_path / "data"  # stands in for the Space's persistent /data
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "WAYFARER_PROFILE": "gpu",
        "WAYFARER__MODEL__BASE": repo_id,
        "WAYFARER__PATHS__HOME": str(home),
        "WAYFARER__GENERATION__MAX_NEW_TOKENS": "8",
        "WAYFARER__RUNTIME__TORCH_THREADS": "1",
    }
    env.pop("SPACE_ID", None)
    done = subprocess.run(
        [sys.executable, "-c", GPU_PROFILE_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["profile"] == "gpu"
    assert report["base"] == repo_id
    assert report["quantized"] and report["weights_4bit"]
    assert report["answer"].strip()
    # No adapters were built in this home: each configured one is reported, the base still serves.
    assert report["adapters"] == ["base"] and report["adapter_errors"] == ["qlora", "raft", "rlhf"]
    assert Path(report["votes"]).parent == home and Path(report["votes"]).exists()
    assert report["server_name"] == "0.0.0.0"
