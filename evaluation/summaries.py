"""What the evaluation report states, computed from results.json and the arena votes: each
evaluator's label, bootstrap estimates of means, the human votes (the arena leaderboard), the
Reddit-preference agreement of each evaluator and its agreement with the arena's ratings."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from evaluation.agreement import Agreement, agreement_with_humans
from evaluation.metrics import GOLDEN_METRICS
from evaluation.rag_metrics import RAG_METRICS
from evaluation.reddit_preference import preference
from settings import Settings

METRIC_LABELS = {
    "bleu": "BLEU", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L",
    "bertscore_p": "BERTScore-style P", "bertscore_r": "BERTScore-style R", "bertscore_f1": "BERTScore-style F1",
    "semantic_similarity": "Semantic sim.", "faithfulness": "Faithfulness", "answer_relevance": "Answer relevance",
    "context_precision": "Context precision", "context_recall": "Context recall",
}
JUDGE_LABELS = {
    "judge_pairwise": "LLM judge (pairwise, swap rule)",
    "judge_pairwise_probability": "LLM judge (pairwise, both orders averaged)",
    "judge_grade": "LLM judge (1-10 grade)",
}
LENGTH_LABEL = "Length (the longer reply)"


def evaluator_labels() -> list[tuple[str, str]]:
    """(key, label) of every evaluator, in table order."""
    return ([(k, METRIC_LABELS[k]) for k in GOLDEN_METRICS + RAG_METRICS] + list(JUDGE_LABELS.items())
            + [("length_chars", LENGTH_LABEL)])


@dataclasses.dataclass(frozen=True)
class Estimate:
    mean: float | None
    lower: float | None
    upper: float | None
    n: int

    def format(self, digits: int = 3) -> str:
        if self.mean is None:
            return "—"
        if self.n < 2:
            return f"{self.mean:.{digits}f} (n=1)"
        return f"{self.mean:.{digits}f} [{self.lower:.{digits}f}, {self.upper:.{digits}f}]"


def bootstrap_mean(values: Sequence[float | None], rounds: int, seed: int) -> Estimate:
    """Mean and percentile-bootstrap 95% interval of the non-missing values."""
    data = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(data) == 0:
        return Estimate(None, None, None, 0)
    mean = float(data.mean())
    if len(data) < 2 or rounds == 0:
        return Estimate(mean, mean, mean, len(data))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(rounds, len(data)))].mean(axis=1)
    lower, upper = np.percentile(means, [2.5, 97.5])
    return Estimate(mean, float(lower), float(upper), len(data))


@dataclasses.dataclass
class HumanVotes:
    board: object | None  # arena.leaderboard.Leaderboard
    votes: int

    @property
    def pair_win_rate(self) -> dict[tuple[str, str], float]:
        if not self.board:
            return {}
        models = self.board.models
        return {(a, b): float(self.board.win_rate[i, j]) for i, a in enumerate(models) for j, b in enumerate(models)
                if i != j and not math.isnan(self.board.win_rate[i, j])}

    @property
    def ratings(self) -> dict[str, float]:
        return {row.model: row.rating for row in self.board.rows} if self.board else {}


def human_votes(settings: Settings, store=None) -> HumanVotes:
    """The arena leaderboard (same exclusions and ratings as the Leaderboard tab)."""
    from arena.config import ArenaConfig
    from arena.leaderboard import leaderboard_from_store

    arena_config = ArenaConfig.from_settings(settings)
    opened = None
    if store is None:
        if arena_config.vote_store == "sqlite" and not settings.path("votes").exists():
            return HumanVotes(None, 0)  # nobody voted yet: do not create an empty store
        from arena.store import open_vote_store

        store = opened = open_vote_store(settings)
    try:
        board = leaderboard_from_store(store, arena_config)
    finally:
        if opened is not None:
            opened.close()  # a PostgreSQL store holds pooled connections
    return HumanVotes(board if board.votes_used else None, board.votes_used)


@dataclasses.dataclass(frozen=True)
class RedditAgreement:
    estimate: Estimate  # mean of the per-pair preferences (1 upvoted, 0 other, 0.5 tie) and its interval
    ties: int


def reddit_agreements(section: Mapping, rounds: int, seed: int) -> dict[str, RedditAgreement]:
    """Per evaluator key: the share of Reddit-preference pairs on which it prefers the upvoted reply."""
    outcomes: dict[str, list[float]] = {}
    for row in section.get("pairs", []):
        for metric, (upvoted, other) in row.get("scores", {}).items():
            found = preference(upvoted, other)
            if found is not None:
                outcomes.setdefault(metric, []).append(found)
        judged = row.get("judge") or {}
        if judged.get("pairwise"):
            result = judged["pairwise"]
            outcomes.setdefault("judge_pairwise", []).append(
                {result["model_x"]: 1.0, result["model_y"]: 0.0}.get(result["winner"], 0.5))
            if result.get("preference_x") is not None:
                outcomes.setdefault("judge_pairwise_probability", []).append(preference(result["preference_x"], 0.5))
        if judged.get("grades"):
            found = preference(*judged["grades"])
            if found is not None:
                outcomes.setdefault("judge_grade", []).append(found)
    return {key: RedditAgreement(bootstrap_mean(values, rounds, seed), sum(v == 0.5 for v in values))
            for key, values in outcomes.items()}


def arena_agreements(models, estimates, summary, grades, humans: HumanVotes) -> dict[str, Agreement]:
    if humans.board is None:
        return {}
    pair_rates, ratings = humans.pair_win_rate, humans.ratings
    found: dict[str, Agreement] = {}
    for metric in GOLDEN_METRICS + RAG_METRICS:
        found[METRIC_LABELS[metric]] = agreement_with_humans(pair_rates, ratings, {m: estimates[m][metric].mean for m in models})
    if summary is not None:
        preference_of = {(a, b): summary.win_rate(a, b) for a in models for b in models if a != b}
        found[JUDGE_LABELS["judge_pairwise"]] = agreement_with_humans(
            pair_rates, ratings, {m: summary.win_rate(m) for m in models},
            {k: v for k, v in preference_of.items() if v is not None})
    if any(g.n for g in grades.values()):
        found[JUDGE_LABELS["judge_grade"]] = agreement_with_humans(pair_rates, ratings, {m: grades[m].mean for m in models})
    return found
