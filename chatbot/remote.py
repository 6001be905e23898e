"""RemoteEngine: the ChatEngine surface over an OpenAI-compatible server (vLLM, or our own).

vLLM serves a base model with several LoRA adapters, each under its own model name
(`--enable-lora --lora-modules qlora=/adapters/qlora raft=...`); the `inference.models` map says
which served name answers for each of our adapter names (unlisted: the same name). Answers
stream from `/v1/chat/completions` with `stream: true`. The configured system prompt is added
here, as ChatEngine does, because vLLM knows nothing about it.

The transport is the `openai` client (as for the remote judge): it streams the server-sent events,
applies the timeouts and turns HTTP failures and in-band stream errors into exceptions, which are
reported here as RemoteBackendError (a GenerationError) with the server's message.

The app talks to `engine.adapters`, `engine.adapter_errors`, `engine.system_prompt`,
`engine.sampling`, `generate`, `generate_rows`, `complete` and `complete_rows`, so the same UI
serves from a local model or from a cluster behind one URL.
"""

from __future__ import annotations

import dataclasses
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
        import openai

        self.base_url = base_url.rstrip("/")
        self.system_prompt = system_prompt
        self.sampling = sampling
        self.base_model_id = f"remote:{self.base_url}"
        self._served_names = {name: (models or {}).get(name, name) for name in adapters}
        # Generous read timeout: a long answer on a busy server streams slowly, not never.
        # No retries: a failed answer is reported in the UI at once (the user can ask again), and a
        # retried generation would make the server decode it twice. A server without keys still
        # needs a non-empty key for the client to start.
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or "no-key",
            timeout=openai.Timeout(timeout_s, connect=10.0),
            max_retries=0,
        )
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
        import openai

        try:
            served = {entry.id for entry in self._client.models.list()}
        except (openai.OpenAIError, AttributeError, TypeError) as err:
            raise RemoteBackendError(f"the inference server at {self.base_url} cannot list its models: {_reason(err)}") from err
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

    def _request(self, messages: list[dict], adapter: str, options: SamplingConfig) -> dict:
        """The keyword arguments of one streamed chat completion."""
        if adapter not in self._adapters:
            reason = self.adapter_errors.get(adapter, "it is not configured")
            raise GenerationError(f"model '{adapter}' is not available: {reason}")
        # vLLM's (and our server's) sampling fields beyond the OpenAI API travel in extra_body.
        extra_body = {"repetition_penalty": options.repetition_penalty,
                      # Our server's answer n-gram limit (vLLM logs these as ignored fields).
                      "repeat_ngram_size": options.repeat_ngram_size, "max_ngram_repeats": options.max_ngram_repeats}
        request = {
            "model": self._served_names[adapter],
            "messages": self.build_messages(messages),
            "stream": True,
            "max_tokens": options.max_new_tokens,
        }
        if options.temperature == 0:
            request.update(temperature=0.0)
        else:
            request.update(temperature=options.temperature, top_p=options.top_p)
            extra_body["top_k"] = options.top_k
        if options.seed is not None:
            request["seed"] = options.seed
        request["extra_body"] = extra_body
        return request

    def _stream(self, request: dict, cancelled: threading.Event) -> Iterator[str]:
        import openai

        try:
            with self._client.chat.completions.create(**request) as stream:
                for chunk in stream:
                    if cancelled.is_set():
                        return  # leaving the block closes the connection; the server stops generating
                    for choice in chunk.choices:
                        if choice.delta is not None and choice.delta.content:
                            yield choice.delta.content
        except openai.APIStatusError as err:
            raise RemoteBackendError(f"the inference server refused the request: {_reason(err)}") from err
        except openai.APIConnectionError as err:  # timeouts included
            raise RemoteBackendError(f"the inference server at {self.base_url} failed: {_reason(err)}") from err
        except openai.APIError as err:  # an error event inside the stream, after the answer started
            raise RemoteBackendError(f"generation failed on the inference server: {err.message}") from err
        except openai.OpenAIError as err:
            raise RemoteBackendError(f"the inference server at {self.base_url} failed: {_reason(err)}") from err

    def generate(self, messages: list[dict], adapter: str = BASE_ADAPTER, **sampling) -> Iterator[str]:
        """Stream the answer as text pieces; closing the iterator closes the connection."""
        request = self._request(messages, adapter, self.sampling.override(**sampling))
        return self._stream(request, threading.Event())

    def generate_rows(self, requests: list[tuple[list[dict], str]], **sampling) -> Iterator[tuple[int, str]]:
        """Several answers at once, as (row, piece). One concurrent request per row: the server
        batches them (vLLM's continuous batching), so a battle costs about one answer's time."""
        if not requests:
            raise GenerationError("nothing to generate")
        options = self.sampling.override(**sampling)
        return self._merge([self._request(messages, adapter, options) for messages, adapter in requests])

    def _merge(self, requests: list[dict]) -> Iterator[tuple[int, str]]:
        output: queue.Queue = queue.Queue()
        cancelled = threading.Event()

        def pump(row: int, request: dict) -> None:
            try:
                for piece in self._stream(request, cancelled):
                    output.put((row, piece))
            except BaseException as err:  # handed to the reader, which raises it
                output.put(err)
            finally:
                output.put(_END)

        threads = [threading.Thread(target=pump, args=(row, r), daemon=True) for row, r in enumerate(requests)]
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
        self._client.close()


def _reason(err: BaseException) -> str:
    """The server's own message where it sent one, else what went wrong on the way."""
    import openai

    if isinstance(err, openai.APIStatusError):
        error = err.body.get("error", err.body) if isinstance(err.body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        return f"HTTP {err.status_code}: {message}" if message else f"HTTP {err.status_code}: {err.response.text[:200]}"
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__
        return f"{err.message} ({cause})" if cause else err.message
    return str(err) or type(err).__name__
