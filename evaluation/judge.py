"""LLM-as-a-judge: pairwise verdicts under the swap rule, and single-answer 1-10 grades.

Prompts follow MT-Bench (Zheng et al., 2023), with its reference-guided variant when a golden
answer exists. A pair is judged in both orders; a verdict counts only when it survives the swap
(the same model wins both times, or both say tie), otherwise the pair is a tie and counts as a
flip.

Two kinds of judge:

* The local judge (one of the engine's models) does not write: it reads its verdict from the
  next-token distribution at the verdict position, one teacher-forced forward pass per prompt
  (`ChatEngine.score_rows`). The prompt is followed by the assistant prefix "Final verdict: [["
  and the verdict is the most probable of the tokens "A", "B" and "C" there (their probabilities
  renormalised over the three). The grade is G-Eval's (Liu et al., 2023) probability-weighted
  mean over the grade tokens after "Rating: [[". In the SmolLM2 tokenizer (and most others)
  digits are single tokens, so "10" is "1" followed by "0": the row is the prompt, the prefix
  and the token "1", and one pass gives both P(first digit) (at the prefix's last token) and,
  after "1", P("0") against P("]]"), which splits P("1") into P(1) and P(10). A tokenizer with
  a one-token "10" reads it directly. Nothing is parsed, so every prompt gets a verdict.
  A tiny local model (the embedded 135M) is a weak judge: its verdicts mostly measure position
  and length bias; the report says so.
* A text judge (an OpenAI-compatible endpoint such as GPT-4, or a Python function) writes its
  answer; "[[A]]"/"[[B]]"/"[[C]]" and "[[rating]]" are parsed from it. A verdict that cannot be
  parsed is a tie and is counted as unparseable.

Every judge returns, per prompt, a JSON-able output (the cache stores it as is): {"text": ...}
for a text judge, {"probabilities": {...}} for the local one; `read_verdict` and `read_grade`
turn either into a verdict or a grade.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from textutils import clip

log = logging.getLogger(__name__)

TIE = "tie"
VERDICT_LABELS = ("A", "B", "C")  # A better, B better, tie
GRADES = tuple(range(1, 11))
PAIRWISE_KIND = "pairwise"
GRADE_KIND = "grade"
PAIRWISE_PREFIX = "Final verdict: [["  # the local judge's assistant turn starts with this
GRADE_PREFIX = "Rating: [["

PAIRWISE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the answers provided by two AI "
    "assistants to the travel question displayed below. Choose the assistant that answers the question "
    "better: consider helpfulness, relevance, accuracy, depth and level of detail. Avoid any position "
    "bias: the order in which the answers are presented must not influence your decision, nor their "
    "length. Output your final verdict by strictly following this format: \"[[A]]\" if assistant A is "
    "better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie."
)
PAIRWISE_SYSTEM_WITH_REFERENCE = (
    "Please act as an impartial judge and evaluate the quality of the answers provided by two AI "
    "assistants to the travel question displayed below. You are given a reference answer written by an "
    "experienced traveller. Compare both assistants' answers with the reference answer and choose the "
    "assistant that answers the question better: consider correctness against the reference, helpfulness "
    "and level of detail. Avoid any position bias: the order in which the answers are presented must not "
    "influence your decision, nor their length. Output your final verdict by strictly following this "
    "format: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie."
)
SINGLE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the answer provided by an AI assistant "
    "to the travel question displayed below. Consider helpfulness, relevance, accuracy, depth and level "
    "of detail. Rate the answer on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", "
    "for example: \"Rating: [[5]]\"."
)
SINGLE_SYSTEM_WITH_REFERENCE = (
    "Please act as an impartial judge and evaluate the quality of the answer provided by an AI assistant "
    "to the travel question displayed below. You are given a reference answer written by an experienced "
    "traveller: compare the assistant's answer with it, and consider correctness, helpfulness and level of "
    "detail. Rate the answer on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", "
    "for example: \"Rating: [[5]]\"."
)
MAX_QUESTION_CHARS = 2000
MIN_CLIP_CHARS = 100  # the local judge halves the clip limits down to this when a prompt is too long


class JudgeError(RuntimeError):
    """The judge could not be reached or answered nonsense; the message never holds the key."""


@dataclasses.dataclass(frozen=True)
class JudgePrompt:
    system: str
    user: str
    kind: str = PAIRWISE_KIND  # pairwise (a verdict A/B/C) or grade (1-10)
    # Rebuilds the prompt with every text clipped to N characters (the local judge's way out of a
    # prompt longer than the model reads); not part of the prompt's identity.
    reclip: Callable[[int], "JudgePrompt"] | None = dataclasses.field(default=None, compare=False, repr=False)
    clip_chars: int = 0

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps([self.system, self.user]).encode()).hexdigest()

    def messages(self) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    def shorter(self) -> "JudgePrompt | None":
        """The same prompt with its texts clipped to half as many characters; None at the floor."""
        if self.reclip is None or self.clip_chars <= MIN_CLIP_CHARS:
            return None
        return self.reclip(max(MIN_CLIP_CHARS, self.clip_chars // 2))


class Judge(Protocol):
    identity: str  # cached outputs are keyed by it and by the exact prompt

    def judge_many(self, prompts: Sequence[JudgePrompt]) -> list[dict]: ...


# --------------------------------------------------------------------------------- text judges
class TextJudge:
    """A judge that writes text: outputs are {"text": ...}, parsed by `read_verdict`/`read_grade`."""

    identity = "text"

    def complete_many(self, prompts: Sequence[JudgePrompt]) -> list[str]:
        raise NotImplementedError

    def judge_many(self, prompts: Sequence[JudgePrompt]) -> list[dict]:
        return [{"text": text} for text in self.complete_many(prompts)]


class FunctionJudge(TextJudge):
    """A judge from a Python function (system, user) -> text."""

    def __init__(self, function: Callable[[str, str], str], identity: str):
        self.function = function
        self.identity = identity

    def complete_many(self, prompts: Sequence[JudgePrompt]) -> list[str]:
        return [self.function(p.system, p.user) for p in prompts]


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


# --------------------------------------------------------------------------------- local judge
class LocalJudge:
    """One of the engine's models, reading verdicts and grades from its next-token probabilities
    (one teacher-forced pass per prompt, `batch_size` prompts per batched pass)."""

    def __init__(self, engine, model: str, *, fingerprint: str, batch_size: int, max_prompt_tokens: int = 4096,
                 progress: Callable[[int, int], None] | None = None):
        if not hasattr(engine, "score_rows"):
            raise JudgeError("the local judge reads token probabilities, which only the in-process engine gives "
                             "(inference.backend is not local): configure a judge endpoint instead")
        if model not in engine.adapters:
            raise JudgeError(f"judge model {model!r} is not served by the engine (have: {', '.join(engine.adapters)})")
        self.engine = engine
        self.model = model
        self.batch_size = max(1, batch_size)
        self.max_prompt_tokens = max_prompt_tokens
        self.progress = progress
        tokenizer = engine.tokenizer
        self._pairwise_prefix, verdict_ids = _continuations(tokenizer, PAIRWISE_PREFIX, VERDICT_LABELS)
        self._grade_prefix, grade_ids = _continuations(tokenizer, GRADE_PREFIX, [str(g) for g in GRADES])
        self._verdict_ids = {label: ids[0] for label, ids in zip(VERDICT_LABELS, verdict_ids)}
        bad = [label for label, ids in zip(VERDICT_LABELS, verdict_ids) if len(ids) != 1]
        if bad:
            raise JudgeError(f"the judge's tokenizer does not give the verdict labels {bad} one token each after "
                             f"{PAIRWISE_PREFIX!r}: cannot read verdict probabilities")
        if any(len(ids) != 1 for ids in grade_ids[:9]):
            raise JudgeError("the judge's tokenizer does not give the digits 1-9 one token each: cannot read grades")
        self._digit_ids = [ids[0] for ids in grade_ids[:9]]
        ten = grade_ids[9]
        # "10" as one token, or as "1" then "0" (the close "]]" tells "1" from "10").
        self._ten_id = ten[0] if len(ten) == 1 else None
        self._zero_id = ten[1] if len(ten) == 2 and ten[0] == self._digit_ids[0] else None
        if self._ten_id is None and self._zero_id is None:
            raise JudgeError("the judge's tokenizer writes 10 neither as one token nor as '1' '0': cannot read grades")
        _, closing = _continuations(tokenizer, GRADE_PREFIX + "1", ["]]"])
        self._close_id = closing[0][0]
        self.identity = f"local-probabilities-v1:{fingerprint}:{model}"

    def _ids(self, prompt: JudgePrompt) -> list[int]:
        from chatbot import InputTooLongError

        current = prompt
        while True:
            try:
                ids = self.engine.build_prompt(current.messages(), max_input_tokens=self.max_prompt_tokens)
                break
            except InputTooLongError:
                current = current.shorter()
                if current is None:
                    raise JudgeError("a judge prompt is too long for the judge model even with its texts clipped") from None
        if prompt.kind == GRADE_KIND:
            # Teacher forcing "1": logits[-2] are P(first digit), logits[-1] tell "1" from "10".
            return ids + self._grade_prefix + ([] if self._ten_id is not None else [self._digit_ids[0]])
        return ids + self._pairwise_prefix

    def _read(self, prompt: JudgePrompt, logits) -> dict:
        import torch

        if prompt.kind == GRADE_KIND:
            at_digit = logits[-1] if self._ten_id is not None else logits[-2]
            ids = self._digit_ids + ([self._ten_id] if self._ten_id is not None else [])
            first = torch.softmax(at_digit[ids].double(), dim=0).tolist()
            if self._ten_id is None:
                after_one = torch.softmax(logits[-1][[self._zero_id, self._close_id]].double(), dim=0).tolist()
                first = [first[0] * after_one[1], *first[1:9], first[0] * after_one[0]]
            return {"probabilities": {str(g): p for g, p in zip(GRADES, first)}}
        values = torch.softmax(logits[-1][[self._verdict_ids[k] for k in VERDICT_LABELS]].double(), dim=0).tolist()
        return {"probabilities": dict(zip(VERDICT_LABELS, values))}

    def judge_many(self, prompts: Sequence[JudgePrompt]) -> list[dict]:
        rows = [self._ids(p) for p in prompts]
        # Batches of similar lengths: a left-padded row costs as much as the batch's longest.
        order = sorted(range(len(prompts)), key=lambda i: len(rows[i]))
        outputs: list[dict | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            logits = self.engine.score_rows([(rows[i], self.model) for i in batch])
            for i, row_logits in zip(batch, logits):
                outputs[i] = self._read(prompts[i], row_logits)
            if self.progress is not None:
                self.progress(min(start + self.batch_size, len(order)), len(order))
        return outputs


def _continuations(tokenizer, prefix: str, texts: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """The prefix's token ids and, per text, the ids that follow them in the tokenization of
    prefix + text (checked to extend the prefix's ids, so teacher forcing sees what it would read)."""
    prefix_ids = list(tokenizer.encode(prefix, add_special_tokens=False))
    following = []
    for text in texts:
        ids = list(tokenizer.encode(prefix + text, add_special_tokens=False))
        if ids[: len(prefix_ids)] != prefix_ids:
            raise JudgeError(f"the judge's tokenizer merges {text!r} into the prefix {prefix!r}: cannot read it")
        following.append(ids[len(prefix_ids):])
    return prefix_ids, following


def judge_from_config(config, engine, *, environ, local_fingerprint: str,
                      progress: Callable[[int, int], None] | None = None) -> Judge:
    """The endpoint named by the environment when its base URL is set, else the local model."""
    base_url = (environ.get(config.base_url_env) or "").strip()
    if base_url:
        model = (environ.get(config.model_env) or "").strip()
        if not model:
            raise JudgeError(f"{config.base_url_env} is set but {config.model_env} (the judge model name) is not")
        return OpenAIJudge(base_url, model, environ.get(config.api_key_env) or None,
                           max_tokens=config.remote_max_tokens, timeout_s=config.timeout_s,
                           concurrency=config.remote_concurrency)
    if engine is None:
        raise JudgeError("no judge: the local engine is not loaded and no endpoint is configured")
    return LocalJudge(engine, config.local_model, fingerprint=local_fingerprint, batch_size=config.batch_size,
                      max_prompt_tokens=config.max_prompt_tokens, progress=progress)


def is_local(judge: Judge) -> bool:
    return isinstance(judge, LocalJudge)


# --------------------------------------------------------------------------------- prompts
def _clip(text: str, limit: int) -> str:
    return clip(text, limit, marker=" [...]")


def pairwise_prompt(question: str, answer_a: str, answer_b: str, max_answer_chars: int = 1500,
                    reference: str | None = None) -> JudgePrompt:
    """MT-Bench's pairwise prompt; its reference-guided variant when `reference` is given."""
    reference_block = (f"[The Start of Reference Answer]\n{_clip(reference, max_answer_chars)}\n"
                       "[The End of Reference Answer]\n\n") if reference and reference.strip() else ""
    user = (
        f"[User Question]\n{_clip(question, min(MAX_QUESTION_CHARS, 2 * max_answer_chars))}\n\n{reference_block}"
        f"[The Start of Assistant A's Answer]\n{_clip(answer_a, max_answer_chars)}\n[The End of Assistant A's Answer]\n\n"
        f"[The Start of Assistant B's Answer]\n{_clip(answer_b, max_answer_chars)}\n[The End of Assistant B's Answer]"
    )
    system = PAIRWISE_SYSTEM_WITH_REFERENCE if reference_block else PAIRWISE_SYSTEM
    return JudgePrompt(system, user, PAIRWISE_KIND, clip_chars=max_answer_chars,
                       reclip=lambda n: pairwise_prompt(question, answer_a, answer_b, n, reference))


def grading_prompt(question: str, answer: str, max_answer_chars: int = 1500, reference: str | None = None) -> JudgePrompt:
    """MT-Bench's single-answer grading prompt; reference-guided when `reference` is given."""
    reference_block = (f"[The Start of Reference Answer]\n{_clip(reference, max_answer_chars)}\n"
                       "[The End of Reference Answer]\n\n") if reference and reference.strip() else ""
    user = (
        f"[Question]\n{_clip(question, min(MAX_QUESTION_CHARS, 2 * max_answer_chars))}\n\n{reference_block}"
        f"[The Start of Assistant's Answer]\n{_clip(answer, max_answer_chars)}\n[The End of Assistant's Answer]"
    )
    system = SINGLE_SYSTEM_WITH_REFERENCE if reference_block else SINGLE_SYSTEM
    return JudgePrompt(system, user, GRADE_KIND, clip_chars=max_answer_chars,
                       reclip=lambda n: grading_prompt(question, answer, n, reference))


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


def read_verdict(output: dict) -> tuple[str | None, dict | None]:
    """(verdict A/B/C or None when unparseable, probabilities of A/B/C or None for a text judge).
    The local judge's verdict is its most probable label (ties between labels: A, B, C order)."""
    probabilities = output.get("probabilities")
    if probabilities:
        return max(VERDICT_LABELS, key=lambda k: probabilities.get(k, 0.0)), dict(probabilities)
    return parse_pairwise_verdict(output.get("text") or ""), None


def read_grade(output: dict) -> float | None:
    """The 1-10 grade: the probability-weighted mean (local judge) or the parsed rating."""
    probabilities = output.get("probabilities")
    if probabilities:
        total = sum(probabilities.values())
        return sum(int(g) * p for g, p in probabilities.items()) / total if total > 0 else None
    return parse_grade(output.get("text") or "")


# --------------------------------------------------------------------------------- swap rule
@dataclasses.dataclass(frozen=True)
class PairwiseResult:
    question_id: str
    model_x: str
    model_y: str
    verdict_x_first: str | None  # raw verdict with x shown as A
    verdict_y_first: str | None  # raw verdict with y shown as A
    winner: str  # model_x, model_y or TIE
    flipped: bool  # the two orders disagree after mapping back to models
    unparseable: int  # of the two verdicts, 0-2
    # P(x better) averaged over both orders, ties counting half: from the local judge's
    # probabilities, else from the verdicts (1, 0, 0.5). Cancels a constant position bias.
    preference_x: float | None = None


def _to_model(verdict: str | None, shown_as_a: str, shown_as_b: str) -> str:
    return {"A": shown_as_a, "B": shown_as_b}.get(verdict or "", TIE)


def _share_for_a(verdict: str | None, probabilities: dict | None) -> float:
    if probabilities:
        total = sum(probabilities.get(k, 0.0) for k in VERDICT_LABELS) or 1.0
        return (probabilities.get("A", 0.0) + 0.5 * probabilities.get("C", 0.0)) / total
    return {"A": 1.0, "B": 0.0}.get(verdict or "", 0.5)


def apply_swap_rule(question_id: str, model_x: str, model_y: str, first: str | None, second: str | None,
                    first_probabilities: dict | None = None, second_probabilities: dict | None = None) -> PairwiseResult:
    """`first`: the verdict with x as A; `second`: with y as A."""
    winner_first = _to_model(first, model_x, model_y)
    winner_second = _to_model(second, model_y, model_x)
    consistent = winner_first == winner_second
    preference = 0.5 * (_share_for_a(first, first_probabilities) + 1.0 - _share_for_a(second, second_probabilities))
    return PairwiseResult(
        question_id, model_x, model_y, first, second,
        winner=winner_first if consistent else TIE,
        flipped=not consistent,
        unparseable=(first is None) + (second is None),
        preference_x=preference,
    )


@dataclasses.dataclass(frozen=True)
class PairwiseItem:
    question_id: str
    question: str
    model_x: str
    answer_x: str
    model_y: str
    answer_y: str
    reference: str | None = None  # a golden answer: the reference-guided prompt


def pairwise_prompts(item: PairwiseItem, max_answer_chars: int) -> tuple[JudgePrompt, JudgePrompt]:
    return (
        pairwise_prompt(item.question, item.answer_x, item.answer_y, max_answer_chars, item.reference),
        pairwise_prompt(item.question, item.answer_y, item.answer_x, max_answer_chars, item.reference),
    )


def judge_cached(judge: Judge, prompts: Sequence[JudgePrompt], cache=None) -> tuple[list[dict], int]:
    """Outputs for every prompt, asking the judge only for those the cache lacks (one call for
    all of them); returns (outputs, prompts the judge was asked)."""
    outputs: dict[str, dict] = {}
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
        results = judge.judge_many(asked)
        if len(results) != len(asked):
            raise JudgeError(f"the judge returned {len(results)} outputs for {len(asked)} prompts")
        for prompt, output in zip(asked, results):
            outputs[prompt.key] = output
            if cache is not None:
                cache.put_judgment(judge.identity, prompt.key, output)
    return [outputs[p.key] for p in prompts], len(missing)


def judge_pairwise(judge: Judge, items: Sequence[PairwiseItem], *, max_answer_chars: int = 1500, cache=None) -> tuple[list[PairwiseResult], int]:
    """Judge every pair in both orders and apply the swap rule; returns (results, judge calls)."""
    prompts = [p for item in items for p in pairwise_prompts(item, max_answer_chars)]
    outputs, calls = judge_cached(judge, prompts, cache)
    results = []
    for i, item in enumerate(items):
        (first, p_first), (second, p_second) = read_verdict(outputs[2 * i]), read_verdict(outputs[2 * i + 1])
        results.append(apply_swap_rule(item.question_id, item.model_x, item.model_y, first, second, p_first, p_second))
    return results, calls


def judge_grades(judge: Judge, prompts: Sequence[JudgePrompt], *, cache=None) -> tuple[list[float | None], int]:
    """The 1-10 grade of every grading prompt; returns (grades, judge calls)."""
    outputs, calls = judge_cached(judge, prompts, cache)
    return [read_grade(o) for o in outputs], calls


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

    @property
    def unparseable_share(self) -> float | None:
        return self.unparseable / (2 * self.comparisons) if self.comparisons else None

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

