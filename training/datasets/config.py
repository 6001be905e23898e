"""The datasets' names, splits and settings (`data.datasets` in wayfarer.yaml)."""

from __future__ import annotations

import dataclasses

from settings import ConfigError, Settings, build_dataclass

DATASET_NAMES = ("sft", "raft", "preference", "golden")
REPORT_FILE = "report.json"

TRAIN, VALIDATION = "train", "validation"
RANDOM, RETRIEVAL = "random", "retrieval"


class DatasetBuildError(RuntimeError):
    """The threads cannot be turned into datasets (missing, malformed or too few)."""


@dataclasses.dataclass(frozen=True)
class DatasetsConfig:
    """The `data.datasets` section of wayfarer.yaml (see the comments there)."""

    seed: int | None
    golden_fraction: float
    golden_min_threads: int
    validation_fraction: float
    question_max_chars: int
    answer_min_chars: int
    answer_max_chars: int
    preference_answer_max_chars: int
    sft_second_comment_score_ratio: float | None
    raft_oracle_probability: float
    raft_distractors: int
    raft_idk_fraction: float
    raft_idk_answer: str
    raft_max_quotes: int
    raft_quote_min_chars: int
    raft_quote_max_chars: int
    raft_answer_max_chars: int
    raft_hard_negatives: bool
    preference_min_score_gap: int
    preference_max_pairs_per_thread: int

    def __post_init__(self) -> None:
        for name in ("golden_fraction", "validation_fraction", "raft_idk_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"data.datasets.{name} must be in [0, 1)")
        if not 0 <= self.raft_oracle_probability <= 1:
            raise ConfigError("data.datasets.raft_oracle_probability must be in [0, 1]")
        for name in ("raft_distractors", "raft_max_quotes", "preference_max_pairs_per_thread",
                     "question_max_chars", "answer_max_chars", "raft_answer_max_chars",
                     "preference_answer_max_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.datasets.{name} must be at least 1")
        if self.golden_min_threads < 0 or self.preference_min_score_gap < 0 or self.answer_min_chars < 0:
            raise ConfigError("data.datasets: golden_min_threads, preference_min_score_gap and "
                              "answer_min_chars cannot be negative")
        if self.raft_quote_min_chars > self.raft_quote_max_chars:
            raise ConfigError("data.datasets.raft_quote_min_chars is above raft_quote_max_chars")

    @classmethod
    def from_settings(cls, settings: Settings) -> "DatasetsConfig":
        config = build_dataclass(cls, settings.section("data")["datasets"])
        if config.seed is None:
            config = dataclasses.replace(config, seed=settings.config.runtime.seed)
        return config
