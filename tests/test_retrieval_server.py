"""Retrieval against a real Chroma server (`chroma run` from the installed chromadb package).

The same index is built from a slice of the demo corpus twice, through the same code path:
into the local folder (retrieval.chroma.mode: persistent) and into the server (mode: http).
Searches must return the same chunks in the same order, a second build must change nothing,
and an unreachable server must be one clear error naming host:port and the keys to change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from settings import apply_runtime, load_settings
from tests.conftest import free_port, thread_record
from tests.test_retrieval import DEMO, REPO

# One region of the demo corpus: its probes are the queries. The probes' threads plus others
# up to this many keep the test quick (each chunk is embedded once, see _memoized_embeddings).
DEMO_FILES = ("RS_europe.jsonl", "RC_europe.jsonl")
PROBES_FILE = "probes_europe.jsonl"
MAX_THREADS = 24
SERVER_START_TIMEOUT_S = 60


def _chroma_cli() -> str:
    beside = Path(sys.executable).parent / "chroma"  # the venv's bin, where chromadb puts it
    found = str(beside) if beside.exists() else shutil.which("chroma")
    if not found:
        pytest.fail("the `chroma` command of the chromadb package is not installed")
    return found


def _heartbeat(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    """A real Chroma server on a free local port; yields the port, stops it at teardown."""
    folder = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        [_chroma_cli(), "run", "--path", str(folder / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _heartbeat(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"chroma run did not start: {(folder / 'server.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def _memoized_embeddings():
    """Each text is embedded once for the module: the second build computes no vector again
    (it still goes through build_index and writes every chunk), and both stores hold
    bit-identical vectors."""
    import numpy as np

    from retrieval.embedder import Embedder

    original = Embedder.embed
    memo: dict[tuple[str, str], np.ndarray] = {}

    def embed(self, texts, batch_size: int = 32):
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if (self.identity.model, t) not in memo]
        if missing:
            for text, vector in zip(missing, original(self, missing, batch_size=batch_size)):
                memo[(self.identity.model, text)] = vector
        return np.stack([memo[(self.identity.model, t)] for t in texts])

    patch = pytest.MonkeyPatch()
    patch.setattr(Embedder, "embed", embed)
    yield
    patch.undo()


def _probes() -> list[dict]:
    import json

    return [json.loads(line) for line in (DEMO / PROBES_FILE).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo_threads(tmp_path_factory) -> Path:
    """A slice of the demo corpus, cleaned by the real ingestion: the probes' threads first."""
    import datasets

    from training.ingest import ingest_to_threads

    home = tmp_path_factory.mktemp("demo-threads")
    base = load_settings(profile="local")
    apply_runtime(base)
    settings = base.with_overrides({"paths": {"home": str(home)}})
    ingest_to_threads(settings, inputs=[DEMO / name for name in DEMO_FILES], output=home / "all", progress=False)
    threads = datasets.load_from_disk(str(home / "all"))
    wanted = {p["thread_id"] for p in _probes()}
    order = sorted(range(len(threads)), key=lambda i: (threads[i]["thread_id"] not in wanted, threads[i]["thread_id"]))
    subset = threads.select(sorted(order[:MAX_THREADS]))
    assert wanted <= set(subset["thread_id"])
    subset.save_to_disk(str(home / "threads"))
    return home / "threads"


def _settings(home: Path, threads: Path, **chroma):
    base = load_settings(profile="local")
    apply_runtime(base)
    overrides = {"paths": {"home": str(home), "threads": str(threads), "models": str(REPO / "var" / "models")}}
    if chroma:
        overrides["retrieval"] = {"chroma": chroma}
    return base.with_overrides(overrides)


def test_a_chroma_server_serves_the_same_hits_as_the_local_folder(
    chroma_server, demo_threads, _memoized_embeddings, tmp_path, monkeypatch, capsys
):
    from chatbot.rag import RagChat
    from retrieval import Retriever, build_index
    from retrieval.store import open_client

    local = _settings(tmp_path / "local", demo_threads)
    remote = _settings(tmp_path / "remote", demo_threads, mode="http", host="127.0.0.1", port=chroma_server)

    built_local = build_index(local, progress=False)
    built_remote = build_index(remote, progress=False)
    assert built_remote.collection == built_local.collection
    assert built_remote.added == built_local.added == built_remote.chunks == built_local.chunks > MAX_THREADS
    assert built_remote.threads == MAX_THREADS
    assert not (tmp_path / "remote" / "index").exists()  # http mode writes nothing locally
    assert open_client(remote).get_settings().chroma_api_impl == "chromadb.api.fastapi.FastAPI"  # an HttpClient
    assert open_client(remote).get_settings().chroma_server_http_port == chroma_server
    assert open_client(local).get_settings().is_persistent
    assert open_client(remote) is open_client(remote)  # one client per target and process

    # Idempotent: the second build against the server finds every chunk current.
    again = build_index(remote, progress=False)
    assert (again.added, again.updated, again.metadata_updated, again.removed, again.batches) == (0, 0, 0, 0, 0)
    assert again.unchanged == again.chunks == built_remote.chunks

    from_folder, from_server = Retriever.from_settings(local), Retriever.from_settings(remote)
    assert from_server.count() == from_folder.count() == built_local.chunks
    probes = _probes()
    found = 0
    for probe in probes:
        expected = from_folder.search(probe["question"], k=5, min_similarity=-1)
        got = from_server.search(probe["question"], k=5, min_similarity=-1)
        assert [h.doc_id for h in got] == [h.doc_id for h in expected], probe["question"]
        assert [h.similarity for h in got] == pytest.approx([h.similarity for h in expected], abs=1e-5)
        assert [(h.title, h.permalink, h.score, h.text) for h in got] == [
            (h.title, h.permalink, h.score, h.text) for h in expected
        ]
        found += probe["thread_id"] in {h.thread_id for h in got}
    assert found >= 0.7 * len(probes)  # the server really answers the questions, not just agrees
    filtered = from_server.search("museums", k=10, min_score=50, min_similarity=-1)
    assert [h.doc_id for h in filtered] == [
        h.doc_id for h in from_folder.search("museums", k=10, min_score=50, min_similarity=-1)
    ]
    assert filtered and all(h.score >= 50 for h in filtered)

    # The RAG chat (and the arena, which uses it) opens the server through the same settings.
    rag = RagChat.from_settings(None, remote)
    assert rag.retrieval_available and rag.retriever.count() == built_remote.chunks

    # The command line, configured from the environment only.
    from retrieval.__main__ import main

    monkeypatch.setenv("WAYFARER_PROFILE", "local")
    monkeypatch.setenv("WAYFARER__PATHS__HOME", str(tmp_path / "remote"))
    monkeypatch.setenv("WAYFARER__PATHS__THREADS", str(demo_threads))
    monkeypatch.setenv("WAYFARER__RETRIEVAL__CHROMA__MODE", "http")
    monkeypatch.setenv("WAYFARER__RETRIEVAL__CHROMA__HOST", "127.0.0.1")
    monkeypatch.setenv("WAYFARER__RETRIEVAL__CHROMA__PORT", str(chroma_server))
    capsys.readouterr()
    assert main(["index"]) == 0
    assert f"unchanged {built_remote.chunks}, removed 0" in capsys.readouterr().out
    question = probes[0]["question"]
    assert main(["query", question, "-k", "3"]) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith("1. [") and from_folder.search(question, k=1, min_similarity=-1)[0].doc_id in first_line


def test_an_unreachable_server_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from chatbot.rag import RagChat
    from retrieval import ChromaUnavailableError, Retriever, build_index

    import datasets

    port = free_port()  # nothing listens there
    threads = tmp_path / "threads"  # build_index must get past its threads check to open the store
    datasets.Dataset.from_list([thread_record("t1", "travel", "Lisbon?", "Cards or cash?", ["Cards work."])]).save_to_disk(
        str(threads)
    )
    settings = _settings(tmp_path, threads, mode="http", host="127.0.0.1", port=port)
    for attempt in (lambda: Retriever.from_settings(settings), lambda: build_index(settings, progress=False)):
        with pytest.raises(ChromaUnavailableError) as failure:
            attempt()
        message = str(failure.value)
        assert f"127.0.0.1:{port}" in message and "retrieval.chroma.host" in message and "retrieval.chroma.port" in message
        assert "retrieval.chroma.mode" in message and "\n" not in message

    # The app starts without sources and says why.
    rag = RagChat.from_settings(None, settings)
    assert not rag.retrieval_available and f"127.0.0.1:{port}" in rag.unavailable_reason

    # The command line: exit code 2 and the message, no traceback.
    from retrieval.__main__ import main

    monkeypatch.setenv("WAYFARER_PROFILE", "local")
    monkeypatch.setenv("WAYFARER__PATHS__HOME", str(tmp_path))
    monkeypatch.setenv("WAYFARER__RETRIEVAL__CHROMA__MODE", "http")
    monkeypatch.setenv("WAYFARER__RETRIEVAL__CHROMA__HOST", "127.0.0.1")
    monkeypatch.setenv("WAYFARER__RETRIEVAL__CHROMA__PORT", str(port))
    capsys.readouterr()
    assert main(["query", "anything"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the Chroma server at 127.0.0.1:") and "Traceback" not in err


def test_chroma_settings_are_checked_and_the_token_comes_from_the_environment(tmp_path, monkeypatch):
    import dataclasses

    from retrieval.config import ChromaConfig, RetrievalConfig
    from retrieval.store import auth_headers, chroma_token
    from settings import ConfigError, shipped_defaults

    settings = _settings(tmp_path, tmp_path / "threads")
    shipped = ChromaConfig(**shipped_defaults().retrieval.chroma.model_dump())
    assert RetrievalConfig.from_settings(settings).chroma == shipped  # persistent by default
    for bad in ({"mode": "cloud"}, {"port": 0}, {"host": "http://x"}, {"auth_header": "Cookie"}, {"colour": 1}):
        with pytest.raises(ConfigError):
            RetrievalConfig.from_settings(settings.with_overrides({"retrieval": {"chroma": bad}}))

    config = dataclasses.replace(shipped, mode="http", auth_token_env="WAYFARER_TEST_CHROMA_TOKEN")
    monkeypatch.delenv("WAYFARER_TEST_CHROMA_TOKEN", raising=False)
    assert chroma_token(config) is None and auth_headers(config, None) == {}
    monkeypatch.setenv("WAYFARER_TEST_CHROMA_TOKEN", "s3cret")
    assert auth_headers(config, chroma_token(config)) == {"Authorization": "Bearer s3cret"}
    x_token = dataclasses.replace(config, auth_header="X-Chroma-Token")
    assert auth_headers(x_token, chroma_token(x_token)) == {"X-Chroma-Token": "s3cret"}
    assert os.environ["WAYFARER_TEST_CHROMA_TOKEN"] == "s3cret"
