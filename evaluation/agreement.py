"""Agreement of an automatic evaluator with the human (arena) votes, on the same model pairs.

Humans give, per model pair, the share of decided battles the first model won (ties left out,
as in the arena's win-rate matrix) and, per model, a Bradley-Terry rating. An automatic
evaluator gives a score per model (a metric's mean, a judge's win rate) and optionally its own
per-pair preference (the judge's pairwise win rate); otherwise the pair preference is the sign
of the score difference.

agreement rate  share of model pairs with a human preference (win rate != 0.5) on which the
                evaluator prefers the same model (an evaluator tie never agrees)
Kendall tau     rank correlation (tau-b) of the evaluator's model scores and the human ratings,
                over the models both have
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Agreement:
    pairs: int  # model pairs with a human preference the evaluator could be compared on
    agreeing: int
    models: int  # models in the rank correlation
    kendall_tau: float | None  # None: fewer than 2 models, or a constant ranking

    @property
    def rate(self) -> float | None:
        return self.agreeing / self.pairs if self.pairs else None


def _sign(value: float, tolerance: float = 1e-12) -> int:
    return 0 if abs(value) <= tolerance else (1 if value > 0 else -1)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (scipy.stats.kendalltau), None when undefined (fewer than 2 models, or
    either ranking constant)."""
    from scipy.stats import kendalltau

    if len(x) != len(y):
        raise ValueError("kendall_tau needs sequences of equal length")
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None  # scipy would warn and return nan
    tau = kendalltau(x, y).statistic
    return None if tau is None or math.isnan(tau) else float(tau)


def agreement_with_humans(
    human_pair_win_rate: Mapping[tuple[str, str], float],
    human_ratings: Mapping[str, float],
    scores: Mapping[str, float | None],
    pair_preference: Mapping[tuple[str, str], float] | None = None,
) -> Agreement:
    """`human_pair_win_rate[(a, b)]`: share of decided human battles a won against b (either
    orientation may be given); `pair_preference[(a, b)]`: the evaluator's share for a (0.5 = no
    preference). Without it the evaluator prefers the model with the higher score."""
    usable = {m: s for m, s in scores.items() if s is not None and not math.isnan(s)}
    pairs = agreeing = 0
    seen: set[frozenset] = set()
    for (a, b), human in human_pair_win_rate.items():
        if a == b or frozenset((a, b)) in seen or human is None or math.isnan(human):
            continue
        seen.add(frozenset((a, b)))
        human_sign = _sign(human - 0.5)
        if human_sign == 0:
            continue
        if pair_preference is not None:
            if (a, b) in pair_preference:
                preference = pair_preference[(a, b)]
            elif (b, a) in pair_preference:
                preference = 1.0 - pair_preference[(b, a)]
            else:
                continue
            if preference is None or math.isnan(preference):
                continue
            evaluator_sign = _sign(preference - 0.5)
        else:
            if a not in usable or b not in usable:
                continue
            evaluator_sign = _sign(usable[a] - usable[b])
        pairs += 1
        agreeing += evaluator_sign == human_sign
    common = sorted(set(usable) & set(human_ratings))
    tau = kendall_tau([usable[m] for m in common], [human_ratings[m] for m in common])
    return Agreement(pairs=pairs, agreeing=agreeing, models=len(common), kendall_tau=tau)
