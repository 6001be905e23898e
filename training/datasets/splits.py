"""Splits decided per thread by a seeded hash of its id, never by row: a thread's text is in
one split only, and golden threads appear nowhere else, not even as RAFT distractors."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from training.datasets.config import TRAIN, VALIDATION, DatasetBuildError, DatasetsConfig
from training.datasets.threads import Thread, comment_list, hash_unit, load_thread_records, thread_answers


@dataclasses.dataclass(frozen=True)
class Splits:
    golden: frozenset[str]
    validation: frozenset[str]  # non-golden threads; all other non-golden threads are train

    def of(self, thread_id: str) -> str:
        return "golden" if thread_id in self.golden else VALIDATION if thread_id in self.validation else TRAIN


def pick_by_hash(ids: Sequence[str], fraction: float, minimum: int, seed: int, salt: str) -> set[str]:
    """The ids whose hash falls under `fraction`, topped up to `minimum` with the next-lowest
    hashes. Both rules take the lowest hashes, so a thread once picked stays picked as the
    corpus grows (a golden question never drifts into training)."""
    ranked = sorted(ids, key=lambda tid: (hash_unit(seed, salt, tid), tid))
    below = sum(1 for tid in ranked if hash_unit(seed, salt, tid) < fraction)
    return set(ranked[: min(max(below, minimum), len(ranked))])


def split_threads(threads: Sequence[Thread], answerable: set[str], config: DatasetsConfig) -> Splits:
    # Only threads with an answer can be golden (they need a reference answer); keep at least
    # half of them for training when the corpus is small.
    candidates = sorted(answerable)
    golden_min = min(config.golden_min_threads, len(candidates) // 2)
    golden = pick_by_hash(candidates, config.golden_fraction, golden_min, config.seed, "golden")
    rest = sorted(t.thread_id for t in threads if t.thread_id not in golden)
    rest_answerable = [tid for tid in rest if tid in answerable]
    minimum = 1 if config.validation_fraction > 0 and len(rest_answerable) > 1 else 0
    validation = pick_by_hash(rest_answerable, config.validation_fraction, minimum, config.seed, "validation")
    # Unanswerable threads only serve as distractor text; give them a split by the same hash rule.
    validation |= {tid for tid in rest if tid not in answerable
                   and hash_unit(config.seed, "validation", tid) < config.validation_fraction}
    return Splits(golden=frozenset(golden), validation=frozenset(validation))


def threads_and_splits(threads_path: Path, config: DatasetsConfig):
    """The cleaned threads (sorted by id), the answerable ones, what was skipped, and the splits."""
    records = load_thread_records(threads_path)
    skipped: Counter[str] = Counter()
    by_id: dict[str, Thread] = {}
    for record in records:
        thread_id = str(record["thread_id"] or "").strip()
        if not thread_id or not str(record["title"] or "").strip():
            skipped["without id or title"] += 1
            continue
        if thread_id in by_id:
            skipped["duplicate thread ids"] += 1
            continue
        by_id[thread_id] = Thread(thread_id, str(record["subreddit"] or ""), str(record["title"]),
                                   str(record["body"] or ""), str(record["permalink"] or ""),
                                   tuple(comment_list(record["comments"])))
    ordered = [by_id[tid] for tid in sorted(by_id)]  # input order must not change the output
    answerable = {t.thread_id for t in ordered if thread_answers(t, config)}
    if len(ordered) > len(answerable):
        skipped["without a substantive top-level reply"] += len(ordered) - len(answerable)
    if not answerable:
        raise DatasetBuildError(f"none of the {len(records)} threads at {threads_path} has a top-level reply of "
                                f"at least {config.answer_min_chars} characters: nothing to build")
    return records, ordered, answerable, skipped, split_threads(ordered, answerable, config)
