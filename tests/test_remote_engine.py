"""The remote inference backend against a real OpenAI-compatible server: the project's own
engine served by chatbot.openai_server with uvicorn on a free port (no mocks)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import free_port, serve_asgi
from tests.engine_checks import assert_answers_are_greedy_for_their_rows

QUESTION = [{"role": "user", "content": "What should I pack for Iceland in March?"}]


@pytest.fixture(scope="module")
def server_url(engine):
    from chatbot.openai_server import create_app

    with serve_asgi(create_app(engine), "the OpenAI-compatible server") as url:
        yield f"{url}/v1"


@pytest.fixture(scope="module")
def remote(settings, server_url):
    from chatbot.remote import RemoteEngine

    overrides = {"inference": {"backend": "openai", "base_url": server_url}}
    engine = RemoteEngine.from_settings(settings.with_overrides(overrides))
    yield engine
    engine.close()


def test_remote_engine_lists_what_the_server_serves(remote, engine):
    assert remote.adapters == engine.adapters == ["base", "qlora", "raft"]
    assert "rlhf" in remote.adapter_errors  # configured, but the server does not serve it
    assert remote.system_prompt == engine.system_prompt


@pytest.mark.parametrize("adapter", ["base", "qlora", "raft"])
def test_remote_greedy_answers_equal_the_local_engine(remote, engine, adapter):
    local = list(engine.generate(QUESTION, adapter, temperature=0, max_new_tokens=12))
    pieces = list(remote.generate(QUESTION, adapter, temperature=0, max_new_tokens=12))
    assert "".join(pieces) == "".join(local) and "".join(pieces).strip()
    assert pieces == local, "the server must stream each piece as the engine produces it"
    if adapter == "base":
        assert len(pieces) > 1, "the answer did not stream"


def test_remote_battle_rows_are_each_their_own_models_answer(remote, engine):
    """The two rows go to the server as two concurrent requests, which it decodes together or
    one after the other as they happen to arrive; a batch shape changes float rounding (a late
    near-tie may resolve differently, tests/engine_checks.py), so each row is checked as its
    own model's answer, not as its solo text."""
    names = ("qlora", "raft")
    greedy = {"temperature": 0, "max_new_tokens": 10, "repetition_penalty": 1.0, "max_ngram_repeats": 0}
    solo = [engine.complete(QUESTION, name, **greedy) for name in names]
    assert solo[0] != solo[1], "the two models must answer differently for a mix-up to show"
    requests = [(QUESTION, name) for name in names]
    rows = remote.complete_rows(requests, **greedy)
    assert_answers_are_greedy_for_their_rows(engine, requests, rows)


def test_remote_errors_are_generation_errors_and_the_server_keeps_serving(remote, server_url, settings):
    from chatbot import GenerationError
    from chatbot.remote import InferenceConfig, RemoteBackendError, RemoteEngine
    from chatbot.sampling import SamplingConfig

    with pytest.raises(GenerationError, match="'rlhf' is not available"):
        remote.generate(QUESTION, "rlhf")
    with pytest.raises(GenerationError, match="end with a user message"):
        remote.generate([{"role": "assistant", "content": "hi"}], "base")
    # Fails inside the server's model.generate, after the stream started: reported in-band.
    with pytest.raises(RemoteBackendError, match="top_k"):
        remote.complete(QUESTION, "qlora", temperature=0.7, top_k=-1, max_new_tokens=4)
    assert remote.complete(QUESTION, "base", temperature=0, max_new_tokens=4).strip()
    # An unknown model is refused by the server with a message, not a crash.
    refused = httpx.post(f"{server_url}/chat/completions", json={"model": "nope", "messages": QUESTION})
    assert refused.status_code == 404 and "not served" in refused.json()["error"]["message"]
    # No server at the URL: a clear error when the engine starts.
    with pytest.raises(RemoteBackendError, match="cannot list its models"):
        RemoteEngine(f"http://127.0.0.1:{free_port()}/v1", ["base"], system_prompt="",
                     timeout_s=InferenceConfig.from_settings(settings).timeout_s,
                     sampling=SamplingConfig.from_settings(settings))


def test_non_streaming_completion_matches(server_url, engine):
    body = {"model": "qlora", "messages": QUESTION, "temperature": 0, "max_tokens": 8}
    answer = httpx.post(f"{server_url}/chat/completions", json=body, timeout=120).json()
    expected = engine.complete(QUESTION, "qlora", temperature=0, max_new_tokens=8)
    assert answer["choices"][0]["message"]["content"] == expected


def test_the_configured_backend_is_chosen(settings, server_url):
    from chatbot.engine import engine_from_settings
    from chatbot.remote import RemoteEngine
    from settings import ConfigError

    chosen = engine_from_settings(settings.with_overrides({"inference": {"backend": "openai", "base_url": server_url}}))
    assert isinstance(chosen, RemoteEngine)
    chosen.close()
    with pytest.raises(ConfigError, match="inference.backend"):
        engine_from_settings(settings.with_overrides({"inference": {"backend": "tgi"}}))
