"""Hugging Face Spaces: the README header is valid Spaces metadata; ZeroGPU, with the real
`spaces` package from PyPI, is told by the Space's SPACES_ZERO_GPU (a fixed-GPU Space keeps
micro-batching) and is imported before torch; the `gpu` profile's code path (hub model id,
4-bit, persistent home) runs end to end with a tiny local stand-in for the hub model; a Space
without persistent storage starts on a local folder and says so in the page."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MODELS_CACHE = REPO / "var" / "models"  # the converted base checkpoint, shared with the app

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


def test_gpu_task_is_the_function_itself_off_zero_gpu(monkeypatch):
    """A laptop, CI, or a Space on fixed GPU hardware (SPACE_ID set, `spaces` installed, no
    SPACES_ZERO_GPU): nothing is wrapped, so the engine keeps its worker and micro-batching."""
    import spaces

    from chatbot.spaces import gpu_task, on_zero_gpu

    def answer(x):
        return x + 1

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/wayfarer")
    assert not on_zero_gpu()
    assert gpu_task(answer) is answer
    assert gpu_task(duration=120)(answer) is answer
    assert spaces.GPU(answer) is answer  # the real package agrees: no ZeroGPU here
    assert on_zero_gpu({"SPACES_ZERO_GPU": "true"}) and on_zero_gpu({"SPACES_ZERO_GPU": "True"})
    assert not on_zero_gpu({"SPACES_ZERO_GPU": "false"}) and not on_zero_gpu({"SPACE_ID": "a/b"})


def zero_gpu_env(**extra) -> dict:
    """The environment of a ZeroGPU Space, as far as it can be had offline: SPACES_ZERO_GPU=true
    makes the real `spaces` package take over torch's CUDA functions at import; the device API
    URL it requires points at a closed port (nothing here asks it for a GPU); no CUDA device."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SPACE_ID": "someone/wayfarer",
        "SPACES_ZERO_GPU": "true",
        "SPACES_ZERO_DEVICE_API_URL": "http://127.0.0.1:9/",
        "CUDA_VISIBLE_DEVICES": "",
        "WAYFARER__RUNTIME__TORCH_THREADS": "1",  # apply_runtime imports torch
        **extra,
    }
    return env


# Records the order in which top-level modules start importing, then starts the app the way
# app.main() does up to the model (app, settings, runtime, the chatbot package) and reports.
#
# This torch is the CPU build; a Space's is a CUDA build, and spaces' ZeroGPU start-up reads three
# things only such a build has. They are set on torch as it finishes importing: the CUDA version,
# the low-level CUDA init (which spaces keeps and replaces with its own guard), and the bad-fork
# probe, False as on a Space where nothing has initialised CUDA. Everything else is the real
# package: it patches torch's CUDA functions and wraps functions with its real GPU decorator.
ZERO_GPU_STARTUP_SCRIPT = """
import importlib.machinery, json, sys

started = []

class ImportOrder:
    def find_spec(self, name, path=None, target=None):
        if "." not in name and name not in started:
            started.append(name)
        return None

def not_in_bad_fork():
    return False

class CudaBuildOfTorch:
    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            module.version.cuda = "12.8"
            module._C._cuda_init = lambda: None
            module.cuda._is_in_bad_fork = not_in_bad_fork

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path[:0] = [ImportOrder(), CudaBuildOfTorch()]
import app
from settings import apply_runtime, load_settings
apply_runtime(load_settings())
from chatbot.spaces import gpu_task, on_zero_gpu
import torch
import spaces

def answer():
    return "ok"

def battle():
    return "ok"

wrapped, timed = gpu_task(answer), gpu_task(duration=90)(battle)
print(json.dumps({
    "order": started,
    "on_zero_gpu": on_zero_gpu(),
    "spaces_zero_gpu": spaces.config.Config.zero_gpu,
    "cuda_emulated": torch.cuda.is_available(),
    "wrapped": wrapped is not answer and hasattr(wrapped, "zerogpu"),
    "timed": timed is not battle and hasattr(timed, "zerogpu"),
}))
"""


def test_zero_gpu_space_imports_spaces_before_torch_and_wraps_with_the_real_spaces_gpu():
    done = subprocess.run(
        [sys.executable, "-c", ZERO_GPU_STARTUP_SCRIPT], cwd=REPO, env=zero_gpu_env(),
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    order = report["order"]
    assert "spaces" in order and "torch" in order
    assert order.index("spaces") < order.index("torch"), (
        f"torch was imported before spaces, by then: {order[: order.index('torch') + 1]}"
    )
    assert report["on_zero_gpu"] and report["spaces_zero_gpu"]
    # The real package ran its ZeroGPU start-up: torch's CUDA is its emulation (no GPU here).
    assert report["cuda_emulated"]
    assert report["wrapped"] and report["timed"]


def test_zero_gpu_space_without_the_spaces_package_is_a_clear_error():
    hidden = "import sys; sys.modules['spaces'] = None  # as if it were not installed\nimport chatbot.spaces\n"
    done = subprocess.run(
        [sys.executable, "-c", hidden], cwd=REPO, env=zero_gpu_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "SPACES_ZERO_GPU says this is a ZeroGPU Space" in done.stderr and "requirements" in done.stderr


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


def _base_checkpoint(settings) -> Path:
    """The local profile's base model as a normal checkpoint (converted from the packaged GGUF
    into var/models the first time, like the app does)."""
    from modeling.base_model import ModelConfig, prepare_checkpoint

    return Path(prepare_checkpoint(ModelConfig.from_settings(settings), settings.path("models")))


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
    "weights_4bit": any(type(m).__name__ == "Linear4bit" for m in engine.model.modules()),
    "device": engine.device,
    "adapters": engine.adapters,
    "adapter_errors": sorted(engine.adapter_errors),
    "answer": answer,
    "votes": str(votes.path),
    "server_name": settings.get("ui.server_name"),
}))
"""


def test_gpu_profile_serves_a_hub_model_in_4bit_with_a_local_stand_in(settings, tmp_path):
    repo_id = "wayfarer-test/tiny-travel-llm"
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, repo_id, _base_checkpoint(settings))
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
    env.pop("SPACES_ZERO_GPU", None)
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


# ------------------------------------------------------------------ no persistent storage
def test_unwritable_home_falls_back_to_a_local_folder_with_a_warning(tmp_path):
    from settings import ConfigError, load_settings, with_writable_home

    fallback = tmp_path / "app" / "var"
    (tmp_path / "app").mkdir()
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    cases = {
        tmp_path / "data" / "wayfarer": "is not an existing folder",  # /data missing: no storage attached
        a_file / "wayfarer": "is not an existing folder",
        Path("/sys/wayfarer"): "is not writable",  # exists, and refuses writes even to root
    }
    for home, why in cases.items():
        settings = load_settings(profile="gpu", overrides={"paths": {"home": str(home), "home_fallback": str(fallback)}})
        used, warning = with_writable_home(settings)
        assert used.path("home") == fallback and used.path("votes").parent == fallback
        assert used.path("threads").is_relative_to(fallback) and settings.path("home") == home
        assert why in warning and str(home) in warning and str(fallback) in warning
        assert "will not survive a restart" in warning
    assert not (tmp_path / "data").exists()  # a missing mount point is never created

    writable = tmp_path / "storage" / "wayfarer"
    (tmp_path / "storage").mkdir()
    settings = load_settings(profile="gpu", overrides={"paths": {"home": str(writable), "home_fallback": str(fallback)}})
    assert with_writable_home(settings) == (settings, None) and writable.is_dir()

    nowhere = load_settings(profile="gpu", overrides={"paths": {"home": "/sys/wayfarer", "home_fallback": "/sys/var"}})
    with pytest.raises(ConfigError, match="paths.home_fallback"):
        with_writable_home(nowhere)


def test_space_without_persistent_storage_starts_and_warns_in_the_page(settings, tmp_path):
    """`python app.py` as a Space runs it, with paths.home under a /data that does not exist."""
    from tests.conftest import app_process, wait_for_app

    _base_checkpoint(settings)  # converted once into var/models, which the app below reads
    fallback = tmp_path / "app-folder"
    env = {
        "WAYFARER__PATHS__HOME": str(tmp_path / "data" / "wayfarer"),
        "WAYFARER__PATHS__HOME_FALLBACK": str(fallback),
        "WAYFARER__PATHS__MODELS": str(settings.path("models")),
        "WAYFARER__RUNTIME__TORCH_THREADS": "1",
    }
    log = tmp_path / "app.log"
    with app_process(env, log) as (url, server):
        page = wait_for_app(url, server, log)
    assert "persistent storage is not available" in page and "will not survive a restart" in page
    assert str(tmp_path / "data" / "wayfarer") in page and str(fallback) in page
    assert (fallback / "votes.sqlite3").is_file()  # the arena's votes go to the fallback folder
    assert not (tmp_path / "data").exists()
