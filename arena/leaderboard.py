"""Ratings from votes: Bradley-Terry with a weak prior and honest intervals, online Elo, win rates, plots.

Bradley-Terry: P(i beats j) = 1 / (1 + 10 ** ((R_j - R_i) / scale)), fitted by maximum
likelihood, which is the logistic regression the Chatbot Arena runs on battle rows. Ties (and
"both bad", which says nothing about which one is better) count as half a win for each side:
the arena's "duplicate every row, ties win in one copy and lose in the other" gives exactly
this likelihood up to a factor 2. Ratings are only defined up to a shift; we centre them so
their mean is `base`.

Low counts. Plain maximum likelihood on one vote puts the winner at +infinity (the old board
showed 2044 vs -44) and a bootstrap of one vote resamples that same vote every time, so its
interval has zero width. Two changes make the board honest there:

* Prior (`prior_ties`, default 2): every model plays that many virtual *ties* against a fixed
  average model (strength 0). This is a proper, weak, log-concave prior on each strength,
  about Gaussian with precision prior_ties/4 (natural-log units) near the mean, i.e. a prior
  standard deviation of ~245 rating points at 2 ties. We chose virtual ties over an L2 penalty
  because they are data of the model's own kind: their weight reads as "games", they enter
  the likelihood exactly like votes (tests compare the fit with a logistic regression on the
  votes plus those rows), and after a few dozen real battles they no longer matter.
* Intervals (`rating_intervals`): `laplace` (default) takes the inverse Hessian of the
  penalised negative log-likelihood at the fit as the covariance of a Gaussian approximation
  of the posterior (the Laplace approximation), and reports rating +- 1.96 standard deviations
  of each centred rating. With one vote the prior's curvature dominates and the interval is
  several hundred points wide; with many votes it converges to the bootstrap and Fisher
  intervals. `bootstrap` resamples the votes (the prior's virtual games in every resample),
  the Chatbot Arena's method, which also captures misfit of the Bradley-Terry model; because a
  bootstrap cannot show uncertainty the data never varied (one vote: every resample is that
  vote), its bounds are widened to at least the Laplace bounds.

A model with fewer than `provisional_battles` real battles is marked provisional.

Speed: battles are aggregated into per-pair win counts, so fitting costs O(pairs), not O(votes),
and a bootstrap resample of N battles is a multinomial draw over the (pair, outcome) cells.
All resamples are fitted together by a batched Newton method in numpy: 100k votes with 100
rounds take well under a second.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arena.config import ArenaConfig
from arena.records import VoteRow
from arena.sessions import abuse_flags
from settings import shipped_defaults

_RIDGE = 1e-6  # keeps ratings finite when a model won (or lost) every battle and there is no prior
_Z95 = 1.959963984540054  # two-sided 95% normal quantile
_DEFAULTS = shipped_defaults().arena  # wayfarer.yaml's defaults.arena: the one source of the defaults below


@dataclasses.dataclass(frozen=True)
class LeaderboardRow:
    model: str
    rating: float  # Bradley-Terry (with the prior) on all used votes
    lower: float  # 95% interval (see rating_intervals)
    upper: float
    elo: float  # online Elo in vote order, for comparison
    battles: int
    wins: int
    losses: int
    ties: int  # ties and both-bad
    provisional: bool = False  # fewer than provisional_battles battles


@dataclasses.dataclass(frozen=True)
class Leaderboard:
    rows: list[LeaderboardRow]  # best first
    models: list[str]  # matrix order (same as rows)
    win_rate: np.ndarray  # [i, j]: share of i's non-tied battles against j that i won (nan: none)
    pair_battles: np.ndarray  # [i, j]: battles between i and j, all outcomes
    votes_used: int
    votes_excluded: int  # flagged votes left out (0 when flagged votes are included)
    flagged_sessions: int  # flagged sessions
    flagged_votes: int = 0  # votes of flagged sessions or client addresses, used or not
    flagged_clients: int = 0  # flagged client addresses
    prior_ties: float = 0.0
    intervals: str = "laplace"
    provisional_battles: int = 0

    TABLE_HEADERS = ["rank", "model", "rating (BT)", "95% interval", "online Elo", "battles", "wins", "losses", "ties", "status"]

    def table(self) -> list[list]:
        return [
            [i + 1, r.model, round(r.rating), f"{r.lower:.0f} to {r.upper:.0f}", round(r.elo), r.battles, r.wins, r.losses,
             r.ties, "provisional" if r.provisional else ""]
            for i, r in enumerate(self.rows)
        ]

    def format_table(self) -> str:
        rows = [self.TABLE_HEADERS] + [[str(c) for c in row] for row in self.table()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self.TABLE_HEADERS))]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def outcome_scores(votes: Sequence[str]) -> np.ndarray:
    """Score of side A per vote: 1 win, 0 loss, 0.5 tie or both bad."""
    lookup = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "both_bad": 0.5}
    return np.array([lookup[v] for v in votes], dtype=float)


def fit_bradley_terry(
    idx_a: np.ndarray,
    idx_b: np.ndarray,
    score_a: np.ndarray,
    n_models: int,
    weights: np.ndarray | None = None,
    prior_ties: float = 0.0,
) -> np.ndarray:
    """Natural-log strengths (mean 0), shape (n_models,) or (B, n_models) for weights (B, n).
    `prior_ties`: virtual ties of every model against a fixed model of strength 0."""
    single = weights is None or np.ndim(weights) == 1
    w = np.ones((1, len(idx_a))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    theta = _newton(idx_a, idx_b, score_a, w, n_models, prior_ties)
    theta = theta - theta.mean(axis=1, keepdims=True)
    return theta[0] if single else theta


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gradient_and_information(theta, idx_a, idx_b, score_a, weights, n_models, prior_ties):
    """Gradient of the penalised log-likelihood and its negative Hessian (the information),
    batched over rows of `weights` (B, n). Without a prior the likelihood only sees differences,
    so sum(theta) = 0 is pinned by a penalty (sum theta)^2 / 2, which makes it invertible."""
    n_boot = weights.shape[0]
    p = _sigmoid(theta[:, idx_a] - theta[:, idx_b])  # (B, n)
    residual = weights * score_a - weights * p
    grad = np.zeros((n_boot, n_models))
    np.add.at(grad.T, idx_a, residual.T)
    np.add.at(grad.T, idx_b, -residual.T)
    curvature = weights * p * (1 - p)  # (B, n)
    info = np.zeros((n_boot, n_models, n_models))
    for rows, cols, sign in ((idx_a, idx_a, 1), (idx_b, idx_b, 1), (idx_a, idx_b, -1), (idx_b, idx_a, -1)):
        np.add.at(info, (slice(None), rows, cols), sign * curvature)
    diagonal = np.arange(n_models)
    if prior_ties > 0:
        # Virtual ties against strength 0: half a win each, so the gradient is m (1/2 - s(theta)).
        s = _sigmoid(theta)
        grad += prior_ties * (0.5 - s)
        info[:, diagonal, diagonal] += prior_ties * s * (1 - s)
    else:
        grad -= _RIDGE * theta + theta.sum(axis=1, keepdims=True)
        info += _RIDGE * np.eye(n_models) + 1.0
    return grad, info


def _newton(idx_a, idx_b, score_a, weights, n_models, prior_ties, iterations: int = 100) -> np.ndarray:
    """Batched Newton-Raphson for the weighted, penalised BT log-likelihood."""
    theta = np.zeros((weights.shape[0], n_models))
    for _ in range(iterations):
        grad, info = _gradient_and_information(theta, idx_a, idx_b, score_a, weights, n_models, prior_ties)
        step = np.linalg.solve(info, grad[..., None])[..., 0]
        # Trust region: a separated data set would otherwise overshoot wildly on early steps.
        biggest = np.abs(step).max(axis=1, keepdims=True)
        step *= np.minimum(1.0, 2.0 / np.maximum(biggest, 1e-300))
        theta += step
        if biggest.max() < 1e-9:
            break
    return theta


def laplace_sd(theta, idx_a, idx_b, score_a, weights, prior_ties) -> np.ndarray:
    """Standard deviation (natural-log units) of each centred strength under the Laplace
    approximation: the inverse information at the fit, projected on the centred ratings."""
    n_models = len(theta)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    _, info = _gradient_and_information(theta[None, :], idx_a, idx_b, score_a, w, n_models, prior_ties)
    covariance = np.linalg.inv(info[0])
    centre = np.eye(n_models) - 1.0 / n_models
    centred = centre @ covariance @ centre
    return np.sqrt(np.clip(np.diag(centred), 0.0, None))


def to_rating(theta: np.ndarray, scale: float, base: float) -> np.ndarray:
    return base + scale * theta / math.log(10)


def online_elo(idx_a, idx_b, score_a, n_models: int, k: float, scale: float, base: float) -> np.ndarray:
    """The arena's online Elo: one update per vote, in vote order (order-dependent by design)."""
    rating = np.full(n_models, float(base))
    for a, b, s in zip(idx_a.tolist(), idx_b.tolist(), score_a.tolist()):
        expected = 1.0 / (1.0 + 10 ** ((rating[b] - rating[a]) / scale))
        rating[a] += k * (s - expected)
        rating[b] -= k * (s - expected)
    return rating


def compute_leaderboard(
    votes: Sequence[VoteRow],
    *,
    prior_ties: float = _DEFAULTS.prior_ties,
    intervals: str = _DEFAULTS.rating_intervals,
    bootstrap_rounds: int = _DEFAULTS.bootstrap_rounds,
    provisional_battles: int = _DEFAULTS.provisional_battles,
    elo_k: float = _DEFAULTS.elo_k,
    scale: float = _DEFAULTS.elo_scale,
    base: float = _DEFAULTS.elo_base,
    abuse_votes: int = _DEFAULTS.abuse_votes,
    abuse_minutes: float = _DEFAULTS.abuse_minutes,
    include_flagged: bool = _DEFAULTS.include_flagged_votes,
    fold_versions: bool = _DEFAULTS.fold_versions,
    seed: int = 0,
) -> Leaderboard:
    """The leaderboard from stored votes; votes of flagged sessions and client addresses are
    left out unless `include_flagged`. `bootstrap_rounds` applies when intervals="bootstrap".
    Each adapter version is rated on its own (`rlhf@3`, `rlhf@4`) unless `fold_versions`, which
    rates all versions of an adapter as one model (`rlhf`)."""
    if intervals not in ("laplace", "bootstrap"):
        raise ValueError(f"intervals must be laplace or bootstrap, got {intervals!r}")
    flags = abuse_flags(votes, abuse_votes, abuse_minutes)
    used = list(votes) if include_flagged else [v for v in votes if v.battle_id not in flags.battle_ids]
    if fold_versions:
        sides = [(v.model_a, v.model_b) for v in used]
    else:
        sides = [(getattr(v, "rated_a", v.model_a), getattr(v, "rated_b", v.model_b)) for v in used]
    models = sorted({a for a, _ in sides} | {b for _, b in sides})
    index = {m: i for i, m in enumerate(models)}
    p = len(models)
    idx_a = np.array([index[a] for a, _ in sides], dtype=int)
    idx_b = np.array([index[b] for _, b in sides], dtype=int)
    score = outcome_scores([v.vote for v in used])

    # Aggregate rows into (ordered pair, outcome) cells: sides carry no term in the model.
    cell_a, cell_b, cell_score, counts = _aggregate(idx_a, idx_b, score, p)
    counts = counts.astype(float)
    if p:
        fitted = _newton(cell_a, cell_b, cell_score, counts[None, :], p, prior_ties)[0]  # the penalised fit itself
        theta = fitted - fitted.mean()
        half_width = _Z95 * scale / math.log(10) * laplace_sd(fitted, cell_a, cell_b, cell_score, counts, prior_ties)
    else:
        theta = half_width = np.zeros(0)
    rating = to_rating(theta, scale, base)
    lower, upper = rating - half_width, rating + half_width
    if intervals == "bootstrap" and bootstrap_rounds > 0 and len(used) and p:
        rng = np.random.default_rng(seed)
        resampled = rng.multinomial(len(used), counts / counts.sum(), size=bootstrap_rounds).astype(float)
        boot = to_rating(fit_bradley_terry(cell_a, cell_b, cell_score, p, resampled, prior_ties), scale, base)
        boot_lower, boot_upper = np.percentile(boot, [2.5, 97.5], axis=0)
        lower, upper = np.minimum(lower, boot_lower), np.maximum(upper, boot_upper)
    elo = online_elo(idx_a, idx_b, score, p, elo_k, scale, base)

    wins = np.zeros((p, p))  # wins[i, j]: battles i won against j
    ties = np.zeros((p, p))
    np.add.at(wins, (idx_a, idx_b), score == 1.0)
    np.add.at(wins, (idx_b, idx_a), score == 0.0)
    np.add.at(ties, (idx_a, idx_b), score == 0.5)
    ties = ties + ties.T
    decided = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        win_rate = np.where(decided > 0, wins / decided, np.nan)
    pair_battles = decided + ties

    rows = [
        LeaderboardRow(
            model=m,
            rating=float(rating[i]),
            lower=float(lower[i]),
            upper=float(upper[i]),
            elo=float(elo[i]),
            battles=int(pair_battles[i].sum()),
            wins=int(wins[i].sum()),
            losses=int(wins[:, i].sum()),
            ties=int(ties[i].sum()),
            provisional=int(pair_battles[i].sum()) < provisional_battles,
        )
        for i, m in enumerate(models)
    ]
    order = sorted(range(p), key=lambda i: -rows[i].rating)
    return Leaderboard(
        rows=[rows[i] for i in order],
        models=[models[i] for i in order],
        win_rate=win_rate[np.ix_(order, order)],
        pair_battles=pair_battles[np.ix_(order, order)],
        votes_used=len(used),
        votes_excluded=len(votes) - len(used),
        flagged_sessions=len(flags.sessions),
        flagged_votes=len(flags.battle_ids),
        flagged_clients=len(flags.clients),
        prior_ties=prior_ties,
        intervals=intervals,
        provisional_battles=provisional_battles,
    )


def _aggregate(idx_a, idx_b, score, p):
    """Unique (a, b, score) cells and how many votes fall in each."""
    if len(idx_a) == 0:
        empty = np.zeros(0, dtype=int)
        return empty, empty, np.zeros(0), np.zeros(0)
    code = (idx_a * p + idx_b) * 3 + (score * 2).astype(int)
    cells, counts = np.unique(code, return_counts=True)
    pair, outcome = np.divmod(cells, 3)
    return pair // p, pair % p, outcome / 2.0, counts


def write_plots(board: Leaderboard, out_dir: Path) -> tuple[Path, Path]:
    """ratings.png (ratings with 95% intervals) and win_rate.png (heatmap) in `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ratings_path, heatmap_path = out_dir / "ratings.png", out_dir / "win_rate.png"
    n = len(board.rows)

    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * n + 2), 4))
    if n:
        x = np.arange(n)
        r = np.array([row.rating for row in board.rows])
        lo = np.array([row.lower for row in board.rows])
        hi = np.array([row.upper for row in board.rows])
        provisional = np.array([row.provisional for row in board.rows])
        for mask, style in ((~provisional, {"fmt": "o"}), (provisional, {"fmt": "o", "mfc": "white", "alpha": 0.6})):
            if mask.any():
                label = "provisional" if style.get("mfc") else "rated"
                ax.errorbar(x[mask], r[mask], yerr=[(r - lo)[mask], (hi - r)[mask]], capsize=6, label=label, **style)
        if provisional.any():
            ax.legend(loc="best", fontsize=8)
        ax.set_xticks(x, board.models, rotation=30, ha="right")
    else:
        ax.text(0.5, 0.5, "no votes yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("Bradley-Terry rating")
    ax.set_title(f"Ratings with 95% intervals ({board.intervals})")
    fig.tight_layout()
    fig.savefig(ratings_path, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * n + 2.5), max(3.5, 0.8 * n + 2)))
    if n:
        image = ax.imshow(np.nan_to_num(board.win_rate, nan=0.5), cmap="RdBu", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                value = board.win_rate[i, j]
                ax.text(j, i, "" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=9)
        ax.set_xticks(range(n), board.models, rotation=30, ha="right")
        ax.set_yticks(range(n), board.models)
        ax.set_xlabel("model B")
        ax.set_ylabel("model A")
        fig.colorbar(image, ax=ax, label="share of non-tied battles A won")
    else:
        ax.text(0.5, 0.5, "no votes yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("Win rate (row beats column)")
    fig.tight_layout()
    fig.savefig(heatmap_path, dpi=100)
    plt.close(fig)
    return ratings_path, heatmap_path


def leaderboard_from_config(votes: Sequence[VoteRow], config: ArenaConfig, **overrides) -> Leaderboard:
    """compute_leaderboard with every setting from the `arena` section (`overrides` win)."""
    settings = dict(
        prior_ties=config.prior_ties,
        intervals=config.rating_intervals,
        bootstrap_rounds=config.bootstrap_rounds,
        provisional_battles=config.provisional_battles,
        elo_k=config.elo_k,
        scale=config.elo_scale,
        base=config.elo_base,
        abuse_votes=config.abuse_votes,
        abuse_minutes=config.abuse_minutes,
        include_flagged=config.include_flagged_votes,
        fold_versions=config.fold_versions,
    )
    settings.update(overrides)
    return compute_leaderboard(votes, **settings)


def leaderboard_summary(board: Leaderboard) -> str:
    """What the ratings rest on (method, prior, provisional rule, flagged votes): plain text that
    is also valid markdown, for the CLI and the Leaderboard tab."""
    method = (
        "the Laplace approximation (inverse Hessian of the penalised likelihood)"
        if board.intervals == "laplace"
        else "a bootstrap of the votes, widened to at least the Laplace approximation"
    )
    text = (
        f"Bradley-Terry ratings with a weak prior (every model starts with "
        f"{board.prior_ties:g} virtual ties against an average model); 95% intervals from {method}. "
        f"Models with fewer than {board.provisional_battles} battles are provisional."
    )
    if board.flagged_votes:
        who = f"{board.flagged_sessions} sessions and {board.flagged_clients} client addresses"
        if board.votes_excluded:
            text += f" Flagged votes: {board.flagged_votes} (from {who} over the abuse threshold), left out."
        else:
            text += f" Flagged votes: {board.flagged_votes} (from {who} over the abuse threshold), included."
    else:
        text += " Flagged votes: 0."
    return text


def leaderboard_from_store(store, config: ArenaConfig) -> Leaderboard:
    return leaderboard_from_config(store.votes(), config)


def simulate_votes(
    ratings: dict[str, float], n: int, *, seed: int = 0, sessions: int = 1, spacing_s: float = 1.0, scale: float = 400.0
) -> list[VoteRow]:
    """`n` votes drawn from the Bradley-Terry model with known `ratings` (no ties: a tie drawn
    at random, whatever the ratings, would pull every fitted rating towards the mean), from
    `sessions` voters, one every `spacing_s` seconds. For tests and bench/arena_bench.py."""
    rng = np.random.default_rng(seed)
    names = list(ratings)
    strength = np.array([ratings[m] for m in names])
    a = rng.integers(0, len(names), n)
    b = (a + rng.integers(1, len(names), n)) % len(names)  # never a model against itself
    won = rng.random(n) < 1 / (1 + 10 ** ((strength[b] - strength[a]) / scale))
    voters = rng.integers(0, sessions, n)
    return [
        VoteRow(f"{i:032x}", f"{voters[i]:064x}", names[a[i]], names[b[i]], "model_a" if won[i] else "model_b", i * spacing_s, 0)
        for i in range(n)
    ]
