"""The judge's prompts and outputs: MT-Bench's pairwise and grading prompts (reference-guided when
a golden answer exists), the Judge protocol every judge follows, and the readers that turn a
judge's output ({"text": ...} or {"probabilities": ...}) into a verdict or a grade."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Protocol

from textutils import clip

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
