"""LLM-as-a-judge: pairwise verdicts under the swap rule, and single-answer 1-10 grades.

Prompts follow MT-Bench (Zheng et al., 2023). A pair is judged in both orders; a verdict counts
only when it survives the swap (the same model wins both times, or both say tie), otherwise the
pair is a tie and counts as a flip. A verdict that cannot be parsed -- none of [[A]]/[[B]]/[[C]],
or several different ones -- is a tie and is counted as unparseable.

A judge is anything with an `identity` (cached outputs are keyed by it and by the exact prompt)
and `complete_many(prompts) -> texts`: the local engine, an OpenAI-compatible endpoint, or a
plain Python function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Protocol

log = logging.getLogger(__name__)

TIE = "tie"

PAIRWISE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the answers provided by two AI "
    "assistants to the travel question displayed below. Choose the assistant that answers the question "
    "better: consider helpfulness, relevance, accuracy, depth and level of detail. Avoid any position "
    "bias: the order in which the answers are presented must not influence your decision, nor their "
    "length. Output your final verdict by strictly following this format: \"[[A]]\" if assistant A is "
    "better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie."
)
SINGLE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the answer provided by an AI assistant "
    "to the travel question displayed below. Consider helpfulness, relevance, accuracy, depth and level "
    "of detail. Rate the answer on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", "
    "for example: \"Rating: [[5]]\"."
)
MAX_QUESTION_CHARS = 2000


class JudgeError(RuntimeError):
    """The judge could not be reached or answered nonsense; the message never holds the key."""


@dataclasses.dataclass(frozen=True)
class JudgePrompt:
    system: str
    user: str

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps([self.system, self.user]).encode()).hexdigest()

    def messages(self) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


class Judge(Protocol):
    identity: str

    def complete_many(self, prompts: Sequence[JudgePrompt]) -> list[str]: ...


class FunctionJudge:
    """A judge from a Python function (system, user) -> text."""

    def __init__(self, function: Callable[[str, str], str], identity: str):
        self.function = function
        self.identity = identity

    def complete_many(self, prompts: Sequence[JudgePrompt]) -> list[str]:
        return [self.function(p.system, p.user) for p in prompts]


class LocalJudge:
    """One of the engine's models, greedy, in batched passes."""

    def __init__(self, engine, model: str, *, fingerprint: str, max_new_tokens: int, batch_size: int, progress: bool = False):
        if model not in engine.adapters:
            raise JudgeError(f"judge model {model!r} is not served by the engine (have: {', '.join(engine.adapters)})")
        self.engine = engine
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.progress = progress
        self.identity = f"local:{fingerprint}:greedy:{max_new_tokens}"

    def complete_many(self, prompts: Sequence[JudgePrompt]) -> list[str]:
        from chatbot import GenerationError

        outputs: list[str] = []
        starts = range(0, len(prompts), self.batch_size)
        if self.progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="judging", unit="batch")
        for start in starts:
            batch = prompts[start:start + self.batch_size]
            rows = [(p.messages(), self.model) for p in batch]
            try:
                outputs.extend(self.engine.complete_rows(rows, temperature=0, max_new_tokens=self.max_new_tokens))
            except GenerationError:
                # One prompt too long must not sink the batch: retry alone, "" (unparseable) on failure.
                for row in rows:
                    try:
                        outputs.append(self.engine.complete(*row, temperature=0, max_new_tokens=self.max_new_tokens))
                    except GenerationError as err:
                        log.warning("judge prompt failed: %s", err)
                        outputs.append("")
        return outputs


class OpenAIJudge:
    """An OpenAI-compatible chat-completions endpoint (GPT-4, vLLM, llama.cpp server...)."""

    def __init__(self, base_url: str, model: str, api_key: str | None, *, max_tokens: int, timeout_s: float):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key  # sent in the header only; never logged or stored
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.identity = f"openai:{base_url.rstrip('/')}:{model}:{max_tokens}"

    def __repr__(self) -> str:
        return f"OpenAIJudge(url={self.url!r}, model={self.model!r})"

    def _complete(self, prompt: JudgePrompt) -> str:
        body = {"model": self.model, "messages": prompt.messages(), "temperature": 0, "max_tokens": self.max_tokens}
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                data = json.loads(response.read().decode())
            return str(data["choices"][0]["message"]["content"] or "")
        except urllib.error.HTTPError as err:
            raise JudgeError(f"judge endpoint {self.url} answered HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise JudgeError(f"judge endpoint {self.url} unreachable: {getattr(err, 'reason', err)}") from None
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"judge endpoint {self.url} returned no chat completion") from None

    def complete_many(self, prompts: Sequence[JudgePrompt]) -> list[str]:
        return [self._complete(p) for p in prompts]


def judge_from_config(config, engine, *, environ, local_fingerprint: str, progress: bool = False) -> Judge:
    """The endpoint named by the environment when its base URL is set, else the local model."""
    base_url = (environ.get(config.base_url_env) or "").strip()
    if base_url:
        model = (environ.get(config.model_env) or "").strip()
        if not model:
            raise JudgeError(f"{config.base_url_env} is set but {config.model_env} (the judge model name) is not")
        return OpenAIJudge(base_url, model, environ.get(config.api_key_env) or None,
                           max_tokens=config.remote_max_tokens, timeout_s=config.timeout_s)
    if engine is None:
        raise JudgeError("no judge: the local engine is not loaded and no endpoint is configured")
    return LocalJudge(engine, config.local_model, fingerprint=local_fingerprint,
                      max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, progress=progress)


# --------------------------------------------------------------------------------- prompts
def _clip(text: str, limit: int) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " [...]"


def pairwise_prompt(question: str, answer_a: str, answer_b: str, max_answer_chars: int = 1500) -> JudgePrompt:
    user = (
        f"[User Question]\n{_clip(question, MAX_QUESTION_CHARS)}\n\n"
        f"[The Start of Assistant A's Answer]\n{_clip(answer_a, max_answer_chars)}\n[The End of Assistant A's Answer]\n\n"
        f"[The Start of Assistant B's Answer]\n{_clip(answer_b, max_answer_chars)}\n[The End of Assistant B's Answer]"
    )
    return JudgePrompt(PAIRWISE_SYSTEM, user)


def grading_prompt(question: str, answer: str, max_answer_chars: int = 1500) -> JudgePrompt:
    user = (
        f"[Question]\n{_clip(question, MAX_QUESTION_CHARS)}\n\n"
        f"[The Start of Assistant's Answer]\n{_clip(answer, max_answer_chars)}\n[The End of Assistant's Answer]"
    )
    return JudgePrompt(SINGLE_SYSTEM, user)


# --------------------------------------------------------------------------------- parsing
_VERDICT_BRACKETS = re.compile(r"\[\[\s*([ABC])\s*\]\]", re.IGNORECASE)
_VERDICT_WORDS = re.compile(r"\b(?:final\s+)?verdict\s*(?:is)?\s*[:\-]?\s*[\"'*\[]*\s*([ABC])\b", re.IGNORECASE)
_VERDICT_ALONE = re.compile(r"^\W*([ABC])\W*$", re.IGNORECASE)
_GRADE_BRACKETS = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]")
_GRADE_WORDS = re.compile(r"\b(?:rating|score|grade)\s*(?:is)?\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_GRADE_ALONE = re.compile(r"^\W*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\W*$")


def parse_pairwise_verdict(text: str) -> str | None:
    """"A", "B", "C" (tie), or None when there is no verdict or several different ones (a judge
    echoing the format "[[A]] if ..., [[B]] if ..." has not decided)."""
    text = text or ""
    for pattern in (_VERDICT_BRACKETS, _VERDICT_WORDS, _VERDICT_ALONE):
        found = {v.upper() for v in pattern.findall(text)}
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    return None


def parse_grade(text: str) -> float | None:
    """The 1-10 rating, or None when there is none (or it is out of range, or ambiguous)."""
    text = text or ""
    for pattern in (_GRADE_BRACKETS, _GRADE_WORDS, _GRADE_ALONE):
        found = {float(v) for v in pattern.findall(text)}
        if len(found) > 1:
            return None
        if found:
            value = found.pop()
            return value if 1 <= value <= 10 else None
    return None


# --------------------------------------------------------------------------------- swap rule
@dataclasses.dataclass(frozen=True)
class PairwiseResult:
    question_id: str
    model_x: str
    model_y: str
    verdict_x_first: str | None  # raw parsed verdict with x shown as A
    verdict_y_first: str | None  # raw parsed verdict with y shown as A
    winner: str  # model_x, model_y or TIE
    flipped: bool  # the two orders disagree after mapping back to models
    unparseable: int  # of the two verdicts, 0-2


def _to_model(verdict: str | None, shown_as_a: str, shown_as_b: str) -> str:
    return {"A": shown_as_a, "B": shown_as_b}.get(verdict or "", TIE)


def apply_swap_rule(question_id: str, model_x: str, model_y: str, first: str | None, second: str | None) -> PairwiseResult:
    """`first`: the verdict with x as A; `second`: with y as A."""
    winner_first = _to_model(first, model_x, model_y)
    winner_second = _to_model(second, model_y, model_x)
    consistent = winner_first == winner_second
    return PairwiseResult(
        question_id, model_x, model_y, first, second,
        winner=winner_first if consistent else TIE,
        flipped=not consistent,
        unparseable=(first is None) + (second is None),
    )


@dataclasses.dataclass(frozen=True)
class PairwiseItem:
    question_id: str
    question: str
    model_x: str
    answer_x: str
    model_y: str
    answer_y: str


def pairwise_prompts(item: PairwiseItem, max_answer_chars: int) -> tuple[JudgePrompt, JudgePrompt]:
    return (
        pairwise_prompt(item.question, item.answer_x, item.answer_y, max_answer_chars),
        pairwise_prompt(item.question, item.answer_y, item.answer_x, max_answer_chars),
    )


def complete_cached(judge: Judge, prompts: Sequence[JudgePrompt], cache=None) -> tuple[list[str], int]:
    """Outputs for every prompt, asking the judge only for those the cache lacks (one call for
    all of them); returns (outputs, prompts the judge was asked)."""
    outputs: dict[str, str] = {}
    missing: dict[str, JudgePrompt] = {}
    for prompt in prompts:
        if prompt.key in outputs or prompt.key in missing:
            continue
        cached = cache.judgment(judge.identity, prompt.key) if cache is not None else None
        if cached is not None:
            outputs[prompt.key] = cached
        else:
            missing[prompt.key] = prompt
    if missing:
        asked = list(missing.values())
        texts = judge.complete_many(asked)
        if len(texts) != len(asked):
            raise JudgeError(f"the judge returned {len(texts)} outputs for {len(asked)} prompts")
        for prompt, text in zip(asked, texts):
            outputs[prompt.key] = text
            if cache is not None:
                cache.put_judgment(judge.identity, prompt.key, text)
    return [outputs[p.key] for p in prompts], len(missing)


def judge_pairwise(judge: Judge, items: Sequence[PairwiseItem], *, max_answer_chars: int = 1500, cache=None) -> tuple[list[PairwiseResult], int]:
    """Judge every pair in both orders and apply the swap rule; returns (results, judge calls)."""
    prompts = [p for item in items for p in pairwise_prompts(item, max_answer_chars)]
    outputs, calls = complete_cached(judge, prompts, cache)
    results = []
    for i, item in enumerate(items):
        first, second = parse_pairwise_verdict(outputs[2 * i]), parse_pairwise_verdict(outputs[2 * i + 1])
        results.append(apply_swap_rule(item.question_id, item.model_x, item.model_y, first, second))
    return results, calls


@dataclasses.dataclass(frozen=True)
class PairwiseSummary:
    models: list[str]
    wins: dict  # (model, opponent) -> comparisons model won against opponent
    ties: dict  # (model, opponent) -> tied comparisons (symmetric)
    comparisons: int
    flips: int
    unparseable: int  # verdicts (two per comparison)

    @property
    def flip_rate(self) -> float | None:
        return self.flips / self.comparisons if self.comparisons else None

    def win_rate(self, model: str, opponent: str | None = None) -> float | None:
        """Share of comparisons won, ties counting half (against one opponent or all)."""
        opponents = [opponent] if opponent else [m for m in self.models if m != model]
        won = sum(self.wins.get((model, o), 0) for o in opponents)
        lost = sum(self.wins.get((o, model), 0) for o in opponents)
        tied = sum(self.ties.get((model, o), 0) for o in opponents)
        total = won + lost + tied
        return (won + 0.5 * tied) / total if total else None


def summarize_pairwise(results: Sequence[PairwiseResult]) -> PairwiseSummary:
    wins: dict = {}
    ties: dict = {}
    models: set[str] = set()
    for r in results:
        models |= {r.model_x, r.model_y}
        if r.winner == TIE:
            for key in ((r.model_x, r.model_y), (r.model_y, r.model_x)):
                ties[key] = ties.get(key, 0) + 1
        else:
            loser = r.model_y if r.winner == r.model_x else r.model_x
            wins[(r.winner, loser)] = wins.get((r.winner, loser), 0) + 1
    return PairwiseSummary(
        models=sorted(models), wins=wins, ties=ties, comparisons=len(results),
        flips=sum(r.flipped for r in results), unparseable=sum(r.unparseable for r in results),
    )
