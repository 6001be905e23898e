"""RemoteEngine: the ChatEngine surface over an OpenAI-compatible server (vLLM, or our own).

vLLM serves a base model with several LoRA adapters, each under its own model name
(`--enable-lora --lora-modules qlora=/adapters/qlora raft=...`); the `inference.models` map says
which served name answers for each of our adapter names (unlisted: the same name). Answers
stream from `/v1/chat/completions` with `stream: true`. The configured system prompt is added
here, as ChatEngine does, because vLLM knows nothing about it.

The app talks to `engine.adapters`, `engine.adapter_errors`, `engine.system_prompt`,
`engine.sampling`, `generate`, `generate_rows`, `complete` and `complete_rows`, so the same UI
serves from a local model or from a cluster behind one URL.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import threading
from collections.abc import Iterator

from chatbot.engine_protocol import WholeAnswers
from chatbot.sampling import GenerationError, SamplingConfig
from modeling.adapters import BASE_ADAPTER
from settings import Settings, build_dataclass

BACKENDS = ("local", "openai")


class RemoteBackendError(GenerationError):
    """The inference server cannot be reached or answered with an error."""


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """The `inference` section of wayfarer.yaml."""

    backend: str
    base_url: str
    api_key_env: str
    models: dict  # our adapter name -> served model name
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "InferenceConfig":
        config = build_dataclass(cls, settings.section("inference"))
        if config.backend not in BACKENDS:
            from settings import ConfigError

            raise ConfigError(f"inference.backend must be one of {', '.join(BACKENDS)}, got {config.backend!r}")
        return config


def engine_from_settings(settings: Settings, *, adapters_dir=None):
    """The configured engine (see chatbot.engine_protocol.engine_from_settings, the one factory)."""
    from chatbot.engine_protocol import engine_from_settings as factory

    return factory(settings, adapters_dir=adapters_dir)


_END = object()


class RemoteEngine(WholeAnswers):
    """Serve our adapter names from an OpenAI-compatible server."""

    def __init__(
        self,
        base_url: str,
        adapters: list[str],
        *,
        models: dict | None = None,
        api_key: str | None = None,
        system_prompt: str,
        sampling: SamplingConfig,
        timeout_s: float,
    ):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.system_prompt = system_prompt
        self.sampling = sampling
        self.base_model_id = f"remote:{self.base_url}"
        self._served_names = {name: (models or {}).get(name, name) for name in adapters}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Generous read timeout: a long answer on a busy server streams slowly, not never.
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0))
        self.adapter_errors: dict[str, str] = {}
        self._adapters: list[str] = []
        self.refresh_adapters()

    @classmethod
    def from_settings(cls, settings: Settings) -> "RemoteEngine":
        config = InferenceConfig.from_settings(settings)
        model = settings.config.model
        return cls(
            config.base_url,
            [BASE_ADAPTER, *model.adapters],
            models=config.models,
            api_key=os.environ.get(config.api_key_env) or None,
            system_prompt=model.system_prompt,
            sampling=SamplingConfig.from_settings(settings),
            timeout_s=config.timeout_s,
        )

    # ----------------------------------------------------------------------------- adapters
    def refresh_adapters(self) -> list[str]:
        """Ask the server which models it serves; ours that it lacks go to adapter_errors."""
        import httpx

        try:
            response = self._http.get("/models")
            response.raise_for_status()
            served = {entry["id"] for entry in response.json()["data"]}
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as err:
            raise RemoteBackendError(f"the inference server at {self.base_url} cannot list its models: {err}") from err
        self._adapters = [name for name, served_name in self._served_names.items() if served_name in served]
        self.adapter_errors = {
            name: f"the inference server does not serve model '{served_name}'"
            for name, served_name in self._served_names.items()
            if served_name not in served
        }
        return self.adapters

    @property
    def adapters(self) -> list[str]:
        return list(self._adapters)

    # ----------------------------------------------------------------------------- requests
    def build_messages(self, messages: list[dict]) -> list[dict]:
        """What the server is sent: the conversation, led by the system prompt (as ChatEngine does)."""
        if not messages or messages[-1].get("role") != "user":
            raise GenerationError("the conversation must end with a user message")
        cleaned = [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") in ("system", "user", "assistant")]
        if not any(m["role"] == "system" for m in cleaned) and self.system_prompt:
            cleaned.insert(0, {"role": "system", "content": self.system_prompt})
        return cleaned

    def _payload(self, messages: list[dict], adapter: str, options: SamplingConfig) -> dict:
        if adapter not in self._adapters:
            reason = self.adapter_errors.get(adapter, "it is not configured")
            raise GenerationError(f"model '{adapter}' is not available: {reason}")
        payload = {
            "model": self._served_names[adapter],
            "messages": self.build_messages(messages),
            "stream": True,
            "max_tokens": options.max_new_tokens,
            "repetition_penalty": options.repetition_penalty,
        }
        if options.temperature == 0:
            payload.update(temperature=0.0)
        else:
            payload.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
        if options.seed is not None:
            payload["seed"] = options.seed
        return payload

    def _stream(self, payload: dict, cancelled: threading.Event) -> Iterator[str]:
        import httpx

        try:
            with self._http.stream("POST", "/chat/completions", json=payload) as response:
                if response.status_code != 200:
                    response.read()
                    raise RemoteBackendError(f"the inference server refused the request: {_error_message(response)}")
                for line in response.iter_lines():
                    if cancelled.is_set():
                        return  # leaving the block closes the connection; the server stops generating
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:"):].strip()
                    if data == "[DONE]":
                        return
                    event = json.loads(data)
                    if "error" in event:
                        raise RemoteBackendError(f"generation failed on the inference server: {event['error'].get('message')}")
                    for choice in event.get("choices", []):
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            yield piece
        except httpx.HTTPError as err:
            raise RemoteBackendError(f"the inference server at {self.base_url} failed: {err}") from err

    def generate(self, messages: list[dict], adapter: str = BASE_ADAPTER, **sampling) -> Iterator[str]:
        """Stream the answer as text pieces; closing the iterator closes the connection."""
        payload = self._payload(messages, adapter, self.sampling.override(**sampling))
        return self._stream(payload, threading.Event())

    def generate_rows(self, requests: list[tuple[list[dict], str]], **sampling) -> Iterator[tuple[int, str]]:
        """Several answers at once, as (row, piece). One concurrent request per row: the server
        batches them (vLLM's continuous batching), so a battle costs about one answer's time."""
        if not requests:
            raise GenerationError("nothing to generate")
        options = self.sampling.override(**sampling)
        payloads = [self._payload(messages, adapter, options) for messages, adapter in requests]
        return self._merge(payloads)

    def _merge(self, payloads: list[dict]) -> Iterator[tuple[int, str]]:
        output: queue.Queue = queue.Queue()
        cancelled = threading.Event()

        def pump(row: int, payload: dict) -> None:
            try:
                for piece in self._stream(payload, cancelled):
                    output.put((row, piece))
            except BaseException as err:  # handed to the reader, which raises it
                output.put(err)
            finally:
                output.put(_END)

        threads = [threading.Thread(target=pump, args=(row, p), daemon=True) for row, p in enumerate(payloads)]
        for thread in threads:
            thread.start()
        try:
            running = len(threads)
            while running:
                item = output.get()
                if item is _END:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item if isinstance(item, GenerationError) else RemoteBackendError(str(item))
                else:
                    yield item
        finally:
            cancelled.set()  # the other rows stop at their next line when one fails or the reader leaves

    def close(self) -> None:
        self._http.close()


def _error_message(response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
