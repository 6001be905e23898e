"""What a build did: rows per dataset and split, what was skipped and why, where the RAFT
distractors came from (`report.json` and the command's summary)."""

from __future__ import annotations

import dataclasses
from typing import Any

from training.datasets.config import RANDOM, TRAIN, VALIDATION


@dataclasses.dataclass
class BuildReport:
    threads_path: str
    output_path: str
    seed: int
    threads_total: int = 0
    threads_usable: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> threads
    golden_threads: int = 0
    rows: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # dataset -> split -> rows
    raft_oracle_share: float = 0.0  # among rows that answer (the "I don't know" rows excluded)
    raft_idk_share: float = 0.0
    distractor_source: str = RANDOM  # "retrieval" when the index gave hard negatives
    distractor_fallback_reason: str | None = None
    index_fingerprint: str | None = None  # the index the hard negatives and preference documents came from
    index_collection: str | None = None
    distractor_rows: dict[str, int] = dataclasses.field(default_factory=dict)  # per-row source -> rows

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def format(self) -> str:
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items())) or "none"
        lines = [
            f"Datasets from {self.threads_total} threads in {self.threads_path}",
            f"  usable threads   {self.threads_usable} (skipped: {skipped})",
            f"  golden           {self.golden_threads} held-out threads",
        ]
        for name in ("sft", "raft", "preference"):
            splits = self.rows.get(name, {})
            lines.append(f"  {name:<16} train {splits.get(TRAIN, 0):>6}   validation {splits.get(VALIDATION, 0):>6}")
        lines.append(f"  raft oracle      {self.raft_oracle_share:.1%} of answerable rows; "
                     f"\"I don't know\" rows {self.raft_idk_share:.1%}")
        source = self.distractor_source
        if self.distractor_fallback_reason:
            source += f" (no hard negatives: {self.distractor_fallback_reason})"
        lines.append(f"  raft distractors {source}; rows by source {dict(sorted(self.distractor_rows.items()))}")
        if self.index_collection:
            lines.append(f"  index            {self.index_collection}, fingerprint {self.index_fingerprint}")
        lines.append(f"Written to {self.output_path}")
        return "\n".join(lines)
