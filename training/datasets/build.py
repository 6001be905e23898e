"""Build all four datasets from the cleaned threads, and swap them into the datasets folder
only when every one of them is written."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corpus import GOLDEN_IDS_FILE, golden_ids_json
from fsutils import move_into_place
from retrieval.chunking import chunker_from_settings
from settings import Settings
from training.datasets.config import (DATASET_NAMES, RANDOM, REPORT_FILE, RETRIEVAL, TRAIN, VALIDATION,
                                      DatasetBuildError, DatasetsConfig)
from training.datasets.documents import DistractorPool, HardNegatives, thread_chunks
from training.datasets.golden import golden_row
from training.datasets.preference import preference_documents, preference_pairs
from training.datasets.raft import raft_row
from training.datasets.report import BuildReport
from training.datasets.schema import features
from training.datasets.sft import sft_row
from training.datasets.splits import threads_and_splits
from training.datasets.threads import thread_answers


def build_datasets(settings: Settings, threads: Path | None = None, output: Path | None = None,
                   index_fingerprint: str | None = None) -> BuildReport:
    """Build sft/, raft/, preference/, golden/ (+ golden_thread_ids.json, report.json) under
    `output` from the cleaned threads at `threads`. Nothing is replaced unless all succeed."""
    from datasets import Dataset, DatasetDict
    from tqdm.auto import tqdm

    config = DatasetsConfig.from_settings(settings)
    retrieval_config = settings.config.retrieval
    threads_path = Path(threads) if threads else settings.path("threads")
    output_path = Path(output) if output else settings.path("datasets")
    report = BuildReport(threads_path=str(threads_path), output_path=str(output_path), seed=config.seed)

    records, ordered, answerable, skipped, splits = threads_and_splits(threads_path, config)
    report.threads_total = len(records)
    report.threads_usable = len(answerable)
    report.golden_threads = len(splits.golden)

    chunker = chunker_from_settings(settings)
    max_comments, top_k = retrieval_config.max_comments, retrieval_config.top_k
    chunks_by_thread = {t.thread_id: thread_chunks(t, chunker, max_comments)
                        for t in tqdm(ordered, desc="chunking threads", leave=False)}
    # Train rows see train threads only; validation rows may also see train threads. Golden
    # threads are never anyone's distractor.
    train_ids = {t.thread_id for t in ordered if splits.of(t.thread_id) == TRAIN}
    visible = {TRAIN: train_ids, VALIDATION: train_ids | set(splits.validation)}
    pools = {split: DistractorPool(chunks_by_thread, sorted(ids)) for split, ids in visible.items()}
    hard, reason = (HardNegatives.open(settings) if config.raft_hard_negatives
                    else (None, "disabled by data.datasets.raft_hard_negatives"))
    report.distractor_source = RETRIEVAL if hard else RANDOM
    report.distractor_fallback_reason = reason
    if hard is not None:
        report.index_collection = hard.collection
        report.index_fingerprint = index_fingerprint

    rows: dict[str, dict[str, list[dict]]] = {name: {TRAIN: [], VALIDATION: []} for name in ("sft", "raft", "preference")}
    golden_rows = []
    for thread in tqdm(ordered, desc="building examples", leave=False):
        if thread.thread_id not in answerable:
            continue
        answers = thread_answers(thread, config)
        question = thread.question(config.question_max_chars)
        split = splits.of(thread.thread_id)
        if split == "golden":
            golden_rows.append(golden_row(thread, question, answers, config))
            continue
        rows["sft"][split].append(sft_row(thread, question, answers, config))
        raft = raft_row(thread, question, answers[0]["body"].strip(), chunks_by_thread[thread.thread_id],
                        pools[split], hard, visible[split], config)
        if raft is None:
            skipped["without a quotable reply in the thread's document (raft only)"] += 1
        else:
            rows["raft"][split].append(raft)
        documents = preference_documents(thread, question, chunks_by_thread[thread.thread_id], pools[split], hard,
                                         visible[split], top_k, config)
        rows["preference"][split].extend(preference_pairs(thread, question, documents, config))

    columns = features()
    built = {
        name: DatasetDict({split: Dataset.from_list(split_rows, features=columns[name])
                           for split, split_rows in by_split.items()})
        for name, by_split in rows.items()
    }
    built["golden"] = Dataset.from_list(golden_rows, features=columns["golden"])

    report.skipped = dict(skipped)
    report.rows = {name: {split: len(r) for split, r in by_split.items()} for name, by_split in rows.items()}
    report.rows["golden"] = {"test": len(golden_rows)}
    raft_all = rows["raft"][TRAIN] + rows["raft"][VALIDATION]
    answering = [r for r in raft_all if not r["idk"]]
    report.raft_oracle_share = sum(r["oracle_included"] for r in answering) / len(answering) if answering else 0.0
    report.raft_idk_share = sum(r["idk"] for r in raft_all) / len(raft_all) if raft_all else 0.0
    report.distractor_rows = dict(Counter(r["distractor_source"] for r in raft_all))

    _write_all(output_path, built, sorted(splits.golden), report)
    return report


def _write_all(output: Path, built: Mapping[str, Any], golden_ids: list[str], report: BuildReport) -> None:
    """Save everything into a staging folder next to `output`, then move each piece into place
    (fsutils.move_into_place), so a failure while saving leaves the previous datasets as they
    were. Other content of `output` (the arena's export) is left alone."""
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}-staging-", dir=output.parent) as staging_dir:
        staging = Path(staging_dir)
        for name in DATASET_NAMES:
            built[name].save_to_disk(str(staging / name))
        (staging / GOLDEN_IDS_FILE).write_text(golden_ids_json(golden_ids))
        (staging / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
        try:
            for name in (*DATASET_NAMES, GOLDEN_IDS_FILE, REPORT_FILE):
                move_into_place(staging / name, output / name)
        except OSError as err:
            raise DatasetBuildError(f"could not move the new datasets into {output} ({err}); "
                                    "build again to replace the rest") from err
