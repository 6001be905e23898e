"""Shared fixtures: real settings in a temporary home, the real embedded model, real adapters.

The converted base checkpoint is cached in the repository's var/models (the same cache the app
uses), so only the first test session on a fresh clone pays for the GGUF conversion.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from settings import apply_runtime, load_settings

REPO = Path(__file__).resolve().parents[1]
MODELS_CACHE = REPO / "var" / "models"


def arena_config(**changes):
    """The shipped `arena` settings (wayfarer.yaml, local profile) with `changes`."""
    import dataclasses

    from arena.config import ArenaConfig

    return dataclasses.replace(ArenaConfig.from_settings(load_settings(profile="local")), **changes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def thread_record(thread_id, subreddit, title, body, comments, score=10, created_utc=1_700_000_000) -> dict:
    """A cleaned thread in the schema training.ingest writes (comments best first)."""
    return {
        "thread_id": thread_id,
        "subreddit": subreddit,
        "title": title,
        "body": body,
        "permalink": f"https://www.reddit.com/r/{subreddit}/comments/{thread_id}/x/",
        "score": score,
        "num_comments": len(comments),
        "created_utc": created_utc,
        "comments": [
            {"comment_id": f"c{thread_id}{i}", "body": text, "score": 10 - i, "created_utc": created_utc + 60, "depth": 0}
            for i, text in enumerate(comments)
        ],
    }


@contextlib.contextmanager
def serve_app(settings, engine, **build_kwargs):
    """The real app (app.build_app) served on a free local port; yields its URL."""
    from app import build_app

    with serve_blocks(build_app(settings, engine, **build_kwargs), default_concurrency_limit=4) as url:
        yield url


def home_settings(tmp_path_factory, name: str):
    """The local profile (runtime applied) in a fresh home, with the shared model cache."""
    base = load_settings(profile="local")
    apply_runtime(base)
    home = tmp_path_factory.mktemp(name)
    return base.with_overrides({"paths": {"home": str(home), "models": str(MODELS_CACHE)}})


def index_threads(settings, threads: list[dict]) -> None:
    """Save `threads` as the home's cleaned corpus and index them with the real embedder."""
    import datasets

    from retrieval import build_index

    datasets.Dataset.from_list(threads).save_to_disk(str(settings.path("threads")))
    build_index(settings, progress=False)


@contextlib.contextmanager
def serve_asgi(app, what: str = "the server"):
    """An ASGI app served by uvicorn on a free local port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), f"{what} did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def serve_blocks(demo, **queue_options):
    """A Gradio Blocks app served on a free local port (queued); yields its URL."""
    port = free_port()
    demo.queue(**queue_options).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def wait_for_app(url: str, server: subprocess.Popen, log: Path, limit_s: float = 600) -> str:
    """The app's page config once it serves (start-up loads the model: up to minutes on a busy CPU)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the app exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=10) as response:
                return response.read().decode()
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the app did not serve {url} within {limit_s} s")


def settings_env(overrides: dict) -> dict[str, str]:
    """Settings overrides as the WAYFARER__<SECTION> variables an app process reads (JSON is YAML)."""
    return {f"WAYFARER__{section.upper()}": json.dumps(value) for section, value in overrides.items()}


@contextlib.contextmanager
def app_process(env: dict[str, str], log: Path):
    """`python app.py` (the local profile) with `env` added, serving on a free port; yields
    (url, process) once it serves. Stopped at the end unless the test killed it."""
    port = free_port()
    full_env = {**os.environ, "WAYFARER_PROFILE": "local", "PYTHONPATH": str(REPO), **env,
                "WAYFARER__UI__SERVER_NAME": "127.0.0.1", "WAYFARER__UI__SERVER_PORT": str(port)}
    url = f"http://127.0.0.1:{port}/"
    with log.open("w") as output:
        server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=full_env, stdout=output,
                                  stderr=subprocess.STDOUT)
    try:
        wait_for_app(url, server, log)
        yield url, server
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()


def ask_in_chat(page, question: str, model: str = "base") -> None:
    """In the Chat tab open on `page`: choose `model` and send `question`."""
    page.get_by_label("Model").click()
    page.get_by_role("option", name=model, exact=True).click()
    box = page.get_by_placeholder("Ask about a destination, transport, costs, visas...")
    box.fill(question)
    box.press("Enter")


@pytest.fixture
def browser():
    """Headless Chromium (Debian's package) driven by Playwright; closed after the test."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "no Chromium installed (make setup-test installs Debian's package)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    home = tmp_path_factory.mktemp("wayfarer-home")
    loaded = load_settings(
        profile="local",
        overrides={
            "paths": {"home": str(home), "models": str(MODELS_CACHE)},
            "runtime": {"torch_threads": 2},
            "generation": {"max_new_tokens": 24},
            # Not `auto`: its choice is timed on this machine (under a test run's load, too), and
            # int8 decodes with bf16 activations while teacher-forced scoring reads prompts in
            # float32, so the engine checks' rounding tolerance would hold or not by the CPU.
            # int8 has its own tests (test_engine.py: agreement with the float32 model).
            "model": {"quantization": "none"},
        },
    )
    apply_runtime(loaded)
    return loaded


def make_lora_adapter(settings, target: Path, *, seed: int, base_model_id: str | None = None) -> Path:
    """Save a tiny LoRA adapter with random (non-zero) weights for the configured base model.

    init_lora_weights=False makes B non-zero, so the adapter really changes the model's output,
    which a freshly initialised LoRA (B = 0) would not.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from modeling.adapters import ADAPTER_METADATA_FILE
    from modeling.base_model import ModelConfig, prepare_checkpoint

    config = ModelConfig.from_settings(settings)
    checkpoint = prepare_checkpoint(config, settings.path("models"))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(str(target))
    metadata = {"base_model": base_model_id or config.base, "method": "test"}
    (target / ADAPTER_METADATA_FILE).write_text(json.dumps(metadata))
    return target


@pytest.fixture(scope="session")
def adapters_dir(settings, tmp_path_factory) -> Path:
    """qlora and raft: two different tiny adapters; rlhf: a corrupt folder."""
    root = tmp_path_factory.mktemp("adapters")
    make_lora_adapter(settings, root / "qlora", seed=1)
    make_lora_adapter(settings, root / "raft", seed=2)
    corrupt = root / "rlhf"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_text("{ this is not json")
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    return root


@pytest.fixture(scope="session")
def engine(settings, adapters_dir):
    from chatbot import ChatEngine

    served = ChatEngine.from_settings(settings, adapters_dir=adapters_dir)
    yield served
    served.close()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for this test session (tests/postgres_server.py). Missing
    binaries fail the tests that need it: CI must run them, and `make test` installs them."""
    from tests.postgres_server import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer.start()
    except PostgresUnavailable as err:
        pytest.fail(str(err), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def postgres_dsn(postgres_server):
    """The DSN of a fresh, empty database on the session's server, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    dsn = postgres_server.create_database(name)
    yield dsn
    postgres_server.drop_database(name)
