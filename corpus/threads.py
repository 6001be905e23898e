"""The cleaned threads dataset (`paths.threads`, written by `python -m training ingest`): the one
reader that indexing, the datasets build and evaluation share."""

from __future__ import annotations

from pathlib import Path

THREAD_COLUMNS = ("thread_id", "subreddit", "title", "body", "permalink", "comments")
INGEST_COMMAND = "python -m training ingest"


class ThreadsMissingError(FileNotFoundError):
    """There is no cleaned threads dataset at the path; the message says how to make one."""


def threads_exist(path: Path) -> bool:
    return (Path(path) / "state.json").is_file() or (Path(path) / "dataset_info.json").is_file()


def load_threads(path: Path, make_command: str = INGEST_COMMAND):
    """The cleaned threads (a datasets.Dataset with THREAD_COLUMNS). ThreadsMissingError names
    `make_command` when there is none; ValueError when the folder holds something else."""
    if not threads_exist(path):
        raise ThreadsMissingError(f"no cleaned threads dataset at {path}; build it first with: {make_command}")
    from datasets import Dataset, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - any unreadable folder gets the same explanation
        raise ValueError(f"cannot read the threads dataset at {path}: {err}") from err
    if not isinstance(loaded, Dataset):
        raise ValueError(f"{path} holds a DatasetDict; expected one Dataset of cleaned threads")
    missing = [c for c in THREAD_COLUMNS if c not in loaded.column_names]
    if missing:
        raise ValueError(f"the threads dataset at {path} lacks columns {missing} "
                         f"(has {loaded.column_names}); re-run ingestion")
    return loaded
