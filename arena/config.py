"""The `arena` section of wayfarer.yaml as a dataclass."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from settings import ConfigError, Settings, build_dataclass

VOTE_STORES = ("sqlite", "postgres")


@dataclasses.dataclass(frozen=True)
class ArenaConfig:
    """Battles, the vote store, abuse limits and the leaderboard."""

    # Relative sampling weight per model name. Empty: every served model equally likely.
    # Served models not listed get weight 1; weight 0 keeps a model out of battles.
    sampling_weights: dict = dataclasses.field(default_factory=dict)
    use_retrieval: bool = True  # both sides answer with the same retrieved documents
    sampling: dict = dataclasses.field(default_factory=dict)  # overrides of `generation` for battles
    max_question_chars: int = 4000
    # Where votes are stored: "sqlite" (the file at paths.votes) or "postgres" (a PostgreSQL
    # database whose DSN, credentials included, is read from the environment variable named by
    # postgres_dsn_env, never from the configuration file).
    vote_store: str = "sqlite"
    postgres_dsn_env: str = "WAYFARER_VOTES_DSN"
    # The salt that turns a Gradio session id into the stored session hash is read from this
    # environment variable; when it is unset a random salt is created once and kept by the vote
    # store (SQLite: a private file next to it; PostgreSQL: in the database).
    session_salt_env: str = "WAYFARER_SESSION_SALT"
    max_votes_per_minute: int = 10  # per session; further votes are refused for a while
    # A session that voted on `abuse_votes` battles within `abuse_minutes` is flagged, and
    # all its votes are left out of the ratings and the exported dataset.
    abuse_votes: int = 1000
    abuse_minutes: float = 10.0
    bootstrap_rounds: int = 100  # bootstrap resamples for the 95% rating intervals
    elo_k: float = 4.0  # online Elo step, as in the Chatbot Arena
    elo_scale: float = 400.0  # a 400-point gap means 10:1 odds
    elo_base: float = 1000.0  # the mean rating
    leaderboard_dir: str | None = None  # plots; null: {home}/leaderboard
    export_validation_fraction: float = 0.1  # share of conversations in the validation split

    def __post_init__(self) -> None:
        if self.vote_store not in VOTE_STORES:
            raise ConfigError(f"arena.vote_store must be one of {', '.join(VOTE_STORES)}, got {self.vote_store!r}")
        if not isinstance(self.postgres_dsn_env, str) or not self.postgres_dsn_env.strip():
            raise ConfigError("arena.postgres_dsn_env must name an environment variable")
        for name, weight in self.sampling_weights.items():
            if not isinstance(weight, (int, float)) or weight < 0 or not math.isfinite(weight):
                raise ConfigError(f"arena.sampling_weights.{name} must be a number >= 0, got {weight!r}")
        if self.max_votes_per_minute < 1 or self.abuse_votes < 1 or self.abuse_minutes <= 0:
            raise ConfigError("arena: max_votes_per_minute and abuse_votes must be >= 1, abuse_minutes > 0")
        if self.bootstrap_rounds < 0 or self.elo_k <= 0 or self.elo_scale <= 0:
            raise ConfigError("arena: bootstrap_rounds must be >= 0, elo_k and elo_scale > 0")
        if not 0 <= self.export_validation_fraction < 1:
            raise ConfigError("arena.export_validation_fraction must be in [0, 1)")

    @classmethod
    def from_settings(cls, settings: Settings) -> "ArenaConfig":
        section = settings.section("arena")
        section["sampling_weights"] = dict(section.get("sampling_weights") or {})
        section["sampling"] = dict(section.get("sampling") or {})
        if not section.get("leaderboard_dir"):
            section["leaderboard_dir"] = str(settings.path("home") / "leaderboard")
        else:
            section["leaderboard_dir"] = str(settings.root / Path(section["leaderboard_dir"]).expanduser())
        return build_dataclass(cls, section)
