"""Text judges: a judge that writes its answer, here an OpenAI-compatible chat-completions endpoint
(GPT-4, vLLM, llama.cpp server...) through the `openai` client, requests sent concurrently."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from evaluation.judge.prompts import JudgeError, JudgePrompt


class TextJudge:
    """A judge that writes text: outputs are {"text": ...}, parsed by `read_verdict`/`read_grade`."""

    identity = "text"

    def complete_many(self, prompts: Sequence[JudgePrompt]) -> list[str]:
        raise NotImplementedError

    def judge_many(self, prompts: Sequence[JudgePrompt]) -> list[dict]:
        return [{"text": text} for text in self.complete_many(prompts)]


class OpenAIJudge(TextJudge):
    """An OpenAI-compatible chat-completions endpoint (GPT-4, vLLM, llama.cpp server...) through
    the `openai` client, `concurrency` requests in flight at once."""

    def __init__(self, base_url: str, model: str, api_key: str | None, *, max_tokens: int, timeout_s: float,
                 concurrency: int = 8):
        from openai import OpenAI

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_tokens = max_tokens
        self.concurrency = max(1, concurrency)
        # The key goes to the client (an Authorization header) and nowhere else. A server without
        # keys still needs a non-empty one for the client to start.
        self._client = OpenAI(base_url=self.base_url, api_key=api_key or "no-key", timeout=timeout_s, max_retries=2)
        self.identity = f"openai:{self.base_url}:{model}:{max_tokens}"

    def __repr__(self) -> str:
        return f"OpenAIJudge(base_url={self.base_url!r}, model={self.model!r})"

    def _complete(self, prompt: JudgePrompt) -> str:
        import openai

        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=prompt.messages(), temperature=0, max_tokens=self.max_tokens)
        except openai.APIStatusError as err:
            raise JudgeError(f"judge endpoint {self.base_url} answered HTTP {err.status_code}") from None
        except openai.APIConnectionError as err:  # includes timeouts
            raise JudgeError(f"judge endpoint {self.base_url} unreachable: {type(err).__name__}") from None
        except openai.OpenAIError as err:
            raise JudgeError(f"judge endpoint {self.base_url} failed: {type(err).__name__}") from None
        try:
            return str(response.choices[0].message.content or "")
        except (AttributeError, IndexError, TypeError):
            raise JudgeError(f"judge endpoint {self.base_url} returned no chat completion") from None

    def complete_many(self, prompts: Sequence[JudgePrompt]) -> list[str]:
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)), thread_name_prefix="judge") as pool:
            return list(pool.map(self._complete, prompts))
