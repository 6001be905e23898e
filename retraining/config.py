"""`arena.retrain`: the loop's settings, file names and states."""

from __future__ import annotations

import dataclasses
import math

from settings import ConfigError, Settings, build_dataclass

STATUS_FILE = "retrain_status.json"
LOCK_FILE = "retrain.lock"
REJECTED_MARKER = "REJECTED"  # written into a rejected candidate's folder
CANDIDATE = "candidate"  # the candidate's name in the evaluation engine
METHODS = ("dpo", "kto")
LOG_LINES = 200  # status log entries kept

# States of the status file.
IDLE, WAITING, RUNNING, PUBLISHED, REJECTED, FAILED, BUSY = (
    "idle", "waiting", "running", "published", "rejected", "failed", "busy")


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """`arena.retrain` (wayfarer.yaml says what each key does)."""

    min_new_votes: int
    max_regression: float
    eval_questions: int
    eval_max_new_tokens: int
    reddit_pairs: int
    max_steps: int | None
    method: str
    poll_s: float
    in_app: bool

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"arena.retrain.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.min_new_votes < 1 or self.eval_questions < 0 or self.reddit_pairs < 0 or self.poll_s <= 0:
            raise ConfigError("arena.retrain: min_new_votes >= 1, eval_questions and reddit_pairs >= 0, poll_s > 0")
        if not math.isfinite(self.max_regression):
            raise ConfigError("arena.retrain.max_regression must be a number")

    @classmethod
    def from_settings(cls, settings: Settings) -> "RetrainConfig":
        from arena.config import ArenaConfig

        return build_dataclass(cls, ArenaConfig.from_settings(settings).retrain)
