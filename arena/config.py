"""The `arena` section of wayfarer.yaml as a dataclass."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from arena.records import RateLimit
from settings import ConfigError, Settings, build_dataclass

VOTE_STORES = ("sqlite", "postgres")
RATING_INTERVALS = ("laplace", "bootstrap")


@dataclasses.dataclass(frozen=True)
class ArenaConfig:
    """Battles, the vote store, abuse limits and the leaderboard."""

    # Relative sampling weight per model name. Empty: every served model equally likely.
    # Served models not listed get weight 1; weight 0 keeps a model out of battles.
    sampling_weights: dict
    use_retrieval: bool  # both sides answer with the same retrieved documents
    sampling: dict  # overrides of `generation` for battles
    max_question_chars: int
    # Where votes are stored: "sqlite" (the file at paths.votes) or "postgres" (a PostgreSQL
    # database whose DSN, credentials included, is read from the environment variable named by
    # postgres_dsn_env, never from the configuration file).
    vote_store: str
    postgres_dsn_env: str
    # The salt that turns a Gradio session id into the stored session hash is read from this
    # environment variable; when it is unset a random salt is created once and kept by the vote
    # store (SQLite: a private file next to it; PostgreSQL: in the database).
    session_salt_env: str
    # Vote rate limits, each counted per session AND per client address (a salted hash of it;
    # see arena.sessions and README "Vote integrity") in the vote store, so every app process on
    # one store shares them. A vote over any limit is refused with the time to wait.
    max_votes_per_minute: int
    max_votes_per_hour: int
    max_votes_per_day: int
    # A session or client address that cast `abuse_votes` votes within `abuse_minutes` is
    # flagged: its votes are left out of the ratings and the exported datasets (their count is
    # shown) unless include_flagged_votes. The threshold must be reachable under the rate limits.
    abuse_votes: int
    abuse_minutes: float
    include_flagged_votes: bool
    # Leaderboard: Bradley-Terry with a weak prior. Every model starts as if it had tied
    # `prior_ties` games against an average model (virtual ties; 0 = plain maximum likelihood).
    prior_ties: float
    # 95% intervals: "laplace" (the penalised likelihood's curvature, honest at any count) or
    # "bootstrap" (resampled votes, the prior in every resample, never narrower than laplace).
    rating_intervals: str
    bootstrap_rounds: int  # resamples when rating_intervals is bootstrap
    provisional_battles: int  # a model with fewer battles is marked provisional
    # Each adapter version is rated on its own (rlhf@3 against rlhf@4, after the retraining loop
    # published a new one); true rates all versions of an adapter as one model.
    fold_versions: bool
    elo_k: float  # online Elo step, as in the Chatbot Arena
    elo_scale: float  # a 400-point gap means 10:1 odds
    elo_base: float  # the mean rating
    leaderboard_dir: str | None  # plots; null: {home}/leaderboard
    export_validation_fraction: float  # share of conversations in the validation split
    # The retraining loop's settings (read by retraining.RetrainConfig; see wayfarer.yaml).
    retrain: dict

    def __post_init__(self) -> None:
        if self.vote_store not in VOTE_STORES:
            raise ConfigError(f"arena.vote_store must be one of {', '.join(VOTE_STORES)}, got {self.vote_store!r}")
        if not isinstance(self.postgres_dsn_env, str) or not self.postgres_dsn_env.strip():
            raise ConfigError("arena.postgres_dsn_env must name an environment variable")
        for name, weight in self.sampling_weights.items():
            if not isinstance(weight, (int, float)) or weight < 0 or not math.isfinite(weight):
                raise ConfigError(f"arena.sampling_weights.{name} must be a number >= 0, got {weight!r}")
        limits = {"max_votes_per_minute": self.max_votes_per_minute, "max_votes_per_hour": self.max_votes_per_hour,
                  "max_votes_per_day": self.max_votes_per_day}
        for name, value in limits.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"arena.{name} must be an integer >= 1, got {value!r}")
        if self.abuse_votes < 1 or self.abuse_minutes <= 0:
            raise ConfigError("arena: abuse_votes must be >= 1 and abuse_minutes > 0")
        reachable = self.max_votes_admitted(self.abuse_minutes * 60.0)
        if self.abuse_votes > reachable:
            raise ConfigError(
                f"arena.abuse_votes={self.abuse_votes} in abuse_minutes={self.abuse_minutes:g} can never be reached: "
                f"the vote rate limits admit at most {reachable} votes in that time, so nobody would ever be "
                "flagged; lower abuse_votes or raise abuse_minutes"
            )
        if self.rating_intervals not in RATING_INTERVALS:
            raise ConfigError(f"arena.rating_intervals must be one of {', '.join(RATING_INTERVALS)}, got {self.rating_intervals!r}")
        if self.prior_ties < 0 or not math.isfinite(self.prior_ties) or self.provisional_battles < 0:
            raise ConfigError("arena: prior_ties and provisional_battles must be >= 0")
        if self.bootstrap_rounds < 0 or self.elo_k <= 0 or self.elo_scale <= 0:
            raise ConfigError("arena: bootstrap_rounds must be >= 0, elo_k and elo_scale > 0")
        if not 0 <= self.export_validation_fraction < 1:
            raise ConfigError("arena.export_validation_fraction must be in [0, 1)")

    def vote_limits(self) -> tuple[RateLimit, ...]:
        """The rate limits the vote store checks, per session and per client address."""
        return (
            RateLimit(self.max_votes_per_minute, 60.0),
            RateLimit(self.max_votes_per_hour, 3600.0),
            RateLimit(self.max_votes_per_day, 86400.0),
        )

    def max_votes_admitted(self, window_s: float) -> int:
        """The most votes one voter can get admitted in any `window_s` seconds under the limits."""
        return min(limit.max_votes * math.ceil(window_s / limit.window_s) for limit in self.vote_limits())

    @classmethod
    def from_settings(cls, settings: Settings) -> "ArenaConfig":
        section = settings.section("arena")
        if not section["leaderboard_dir"]:
            section["leaderboard_dir"] = str(settings.path("home") / "leaderboard")
        else:
            section["leaderboard_dir"] = str(settings.root / Path(section["leaderboard_dir"]).expanduser())
        return build_dataclass(cls, section)
