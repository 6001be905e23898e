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

    seed: int | None = None
    golden_fraction: float = 0.1
    golden_min_threads: int = 10
    validation_fraction: float = 0.1
    question_max_chars: int = 2000
    answer_min_chars: int = 40
    answer_max_chars: int = 1500
    preference_answer_max_chars: int = 600
    sft_second_comment_score_ratio: float | None = 0.5
    raft_oracle_probability: float = 0.8
    raft_distractors: int = 3
    raft_idk_fraction: float = 0.05
    raft_idk_answer: str = "I don't know: the documents do not cover this question."
    raft_max_quotes: int = 2
    raft_quote_min_chars: int = 25
    raft_quote_max_chars: int = 300
    raft_answer_max_chars: int = 600
    raft_hard_negatives: bool = True
    preference_min_score_gap: int = 3
    preference_max_pairs_per_thread: int = 3

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
        config = build_dataclass(cls, settings.get("data.datasets", {}) or {})
        if config.seed is None:
            config = dataclasses.replace(config, seed=int(settings.get("runtime.seed", 0)))
        return config
