"""Pairwise judging under the swap rule: every pair is judged in both orders and a verdict counts
only when it survives the swap; the cache-aware batch of judge calls; the summary of results."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from evaluation.judge.prompts import (
    TIE,
    VERDICT_LABELS,
    Judge,
    JudgeError,
    JudgePrompt,
    pairwise_prompt,
    read_grade,
    read_verdict,
)


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
