"""Golden rows: held-out questions with the best reply as reference answer, for evaluation;
and golden_thread_ids.json, decided before the index is built."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from corpus import save_golden_thread_ids
from settings import Settings
from textutils import clip
from training.datasets.config import DatasetsConfig
from training.datasets.splits import threads_and_splits
from training.datasets.threads import Thread


def golden_row(thread: Thread, question: str, answers: Sequence[dict], config: DatasetsConfig) -> dict:
    return {
        "thread_id": thread.thread_id, "question": question,
        "reference_answer": clip(answers[0]["body"], config.answer_max_chars, at_sentence=True),
        "subreddit": thread.subreddit, "permalink": thread.permalink,
    }


def write_golden_thread_ids(settings: Settings, threads: Path | None = None, output: Path | None = None) -> int:
    """Decide the held-out (golden) threads and write golden_thread_ids.json, before the index is
    built: the index leaves them out, and the datasets built after it take hard negatives from
    it. The split depends on the threads and data.datasets only, so `build` writes the same file."""
    config = DatasetsConfig.from_settings(settings)
    output_path = Path(output) if output else settings.path("datasets")
    _, _, _, _, splits = threads_and_splits(Path(threads) if threads else settings.path("threads"), config)
    save_golden_thread_ids(output_path, splits.golden)
    return len(splits.golden)
