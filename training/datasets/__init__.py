"""Step `build`: cleaned threads -> the SFT, RAFT, preference and golden datasets.

One thread gives one question (its title + body) and, from its replies, the answers:

* sft         the best reply (plus the second when it adds something) as the assistant turn;
* raft        RAFT (arXiv 2403.10131): the question with the oracle chunk and k distractor chunks
              (probability p) or distractors only (1 - p), and a chain-of-thought answer quoting
              the oracle; a few "I don't know" rows whose documents come from unrelated threads;
* preference  best reply = chosen, a clearly lower-scored (or low-effort) reply = rejected;
* golden      held-out questions with the best reply as reference answer, for evaluation.

Every split is decided per thread by a seeded hash of its id, never by row, so a thread's text
is in one split only; golden threads appear nowhere else, not even as RAFT distractors. Every
random choice is drawn from a generator seeded with the thread id, so a rerun on the same
threads writes byte-identical datasets, whatever order the threads come in.

One module per idea:
    config.py     names, splits, DatasetsConfig        report.py   BuildReport
    threads.py    the thread model, seeded draws        splits.py   golden / train / validation
    documents.py  chunks, distractors, hard negatives   schema.py   columns and chat layout
    sft.py, raft.py, preference.py, golden.py           one per dataset
    build.py      build_datasets                        cli.py      `python -m training build`
"""

from training.datasets.build import build_datasets
from training.datasets.cli import configure, run
from training.datasets.config import DATASET_NAMES, DatasetBuildError, DatasetsConfig
from training.datasets.golden import write_golden_thread_ids
from training.datasets.report import BuildReport

__all__ = ["DATASET_NAMES", "BuildReport", "DatasetBuildError", "DatasetsConfig", "build_datasets", "configure",
           "run", "write_golden_thread_ids"]
