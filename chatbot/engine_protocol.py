"""The one surface every engine offers (the local ChatEngine, chatbot.remote.RemoteEngine), what
the UI, the RAG chat, the arena, the evaluation runner and the OpenAI-compatible server use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from chatbot.sampling import SamplingConfig
from modeling.adapters import BASE_ADAPTER


@runtime_checkable
class Engine(Protocol):
    system_prompt: str
    sampling: SamplingConfig
    base_model_id: str
    adapter_errors: dict[str, str]

    @property
    def adapters(self) -> list[str]:
        """Names servable now: 'base' first, then the loaded adapters."""

    def generate(self, messages: list[dict], adapter: str = BASE_ADAPTER, **sampling) -> Iterator[str]:
        """Stream one answer as text pieces; closing the iterator cancels it."""

    def generate_rows(self, requests: list[tuple[list[dict], str]], **sampling) -> Iterator[tuple[int, str]]:
        """Several (messages, adapter) answers started together, streamed as (row, piece)."""

    def complete(self, messages: list[dict], adapter: str = BASE_ADAPTER, **sampling) -> str: ...

    def complete_rows(self, requests: list[tuple[list[dict], str]], **sampling) -> list[str]: ...

    def close(self) -> None: ...


class WholeAnswers:
    """`complete` / `complete_rows` for any engine that streams with `generate` / `generate_rows`."""

    def complete(self, messages: list[dict], adapter: str = BASE_ADAPTER, **sampling) -> str:
        """The whole answer at once."""
        return "".join(self.generate(messages, adapter, **sampling))

    def complete_rows(self, requests: list[tuple[list[dict], str]], **sampling) -> list[str]:
        """Whole answers of rows started together, in request order."""
        answers = [""] * len(requests)
        for row, piece in self.generate_rows(requests, **sampling):
            answers[row] += piece
        return answers
