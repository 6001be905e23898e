"""Saved datasets -> trainer rows: loading the splits, refusing golden threads, sampling, the
served system prompt in front of each prompt, and rows too long to teach anything left out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fsutils import files_digest
from training.datasets.config import TRAIN, VALIDATION
from training.errors import TrainingError


def dataset_fingerprint(path: Path) -> str:
    """A hash of a saved dataset's Arrow files: the builder writes byte-identical files for the
    same input, so equal fingerprints mean equal data."""
    # Only the saved shards: `map` on a dataset loaded from disk may add cache-*.arrow files.
    digest = files_digest(path, "data-*.arrow")
    if digest is None:
        raise TrainingError(f"no dataset at {path}")
    return digest


def load_splits(datasets_dir: Path, name: str, *, step_hint: str = "python -m training build"):
    """A DatasetDict with train and validation splits, or a clear error."""
    from datasets import DatasetDict, load_from_disk

    path = Path(datasets_dir) / name
    if not path.is_dir():
        raise TrainingError(f"no {name} dataset at {path}; build it with `{step_hint}`")
    try:
        # In memory: the small datasets are mapped (system prompt, tokens) without writing cache
        # files into the dataset folder.
        loaded = load_from_disk(str(path), keep_in_memory=True)
    except Exception as err:  # datasets raises several unrelated types for a broken folder
        raise TrainingError(f"the {name} dataset at {path} is unreadable: {err}") from err
    if not isinstance(loaded, DatasetDict) or TRAIN not in loaded or VALIDATION not in loaded:
        raise TrainingError(f"the {name} dataset at {path} must be a DatasetDict with train and validation splits")
    return loaded


def check_no_golden(datasets_dir: Path, *datasets) -> None:
    """Refuse to train on any row from a held-out (golden) thread."""
    from corpus import load_golden_thread_ids

    golden = load_golden_thread_ids(Path(datasets_dir))
    for dataset in datasets:
        if dataset is None or "thread_id" not in dataset.column_names:
            continue
        leaked = golden.intersection(dataset["thread_id"])
        if leaked:
            raise TrainingError(f"{len(leaked)} golden (held-out) threads are in a training set, e.g. "
                                f"{sorted(leaked)[:3]}; rebuild the datasets with `python -m training build`")


def sample_rows(dataset, max_rows: int | None, seed: int):
    """A seeded sample of at most `max_rows` rows (all rows, in order, when unlimited)."""
    if max_rows is None or len(dataset) <= max_rows:
        return dataset
    return dataset.shuffle(seed=seed).select(range(max_rows))


def to_prompt_completion(dataset, system_prompt: str, documents_system_prompt: str | None = None):
    """[user, assistant] messages -> trl's conversational prompt/completion with the served system
    prompt, so the model learns in exactly the context the chatbot gives it, and trl computes the
    loss on the completion (the assistant turn) only. Rows with documents (a non-empty `doc_ids`,
    RAFT) get `documents_system_prompt`, as the chatbot does when it puts documents in a turn."""
    has_docs = "doc_ids" in dataset.column_names and documents_system_prompt is not None

    def convert(row):
        turns = row["messages"]
        if len(turns) != 2 or turns[0]["role"] != "user" or turns[1]["role"] != "assistant":
            raise TrainingError(f"expected [user, assistant] messages, got roles {[t['role'] for t in turns]}")
        text = documents_system_prompt if has_docs and row["doc_ids"] else system_prompt
        system = [{"role": "system", "content": text}] if text else []
        return {"prompt": system + [turns[0]], "completion": [turns[1]]}

    return dataset.map(convert, remove_columns=dataset.column_names, desc="adding the system prompt")


def with_system_prompt(dataset, system_prompt: str, documents_system_prompt: str | None = None):
    """Preference rows: the system prompt in front of the user turn (chosen/rejected unchanged).
    A user turn holding RAFT documents (built pairs and arena battles answered with retrieval)
    gets `documents_system_prompt`, as the chatbot serves it."""
    from raft import has_documents

    def convert(row):
        prompt = list(row["prompt"])
        if prompt and prompt[0]["role"] == "system":  # an exported battle that kept its system prompt
            return {"prompt": prompt}
        with_docs = documents_system_prompt is not None and any(
            turn["role"] == "user" and has_documents(turn["content"]) for turn in prompt)
        text = documents_system_prompt if with_docs else system_prompt
        return {"prompt": ([{"role": "system", "content": text}] if text else []) + prompt}

    if not system_prompt and not documents_system_prompt:
        return dataset
    return dataset.map(convert, desc="adding the system prompt")


def prompt_tokens(tokenizer, prompt: Sequence[Mapping]) -> int:
    ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def drop_prompts_too_long(dataset, tokenizer, max_length: int, min_answer_tokens: int) -> tuple[Any, int]:
    """Drop rows whose prompt leaves fewer than `min_answer_tokens` answer tokens within max_length:
    truncation would cut their whole answer away and they would teach nothing."""
    limit = max_length - min_answer_tokens
    keep = [i for i, prompt in enumerate(dataset["prompt"]) if prompt_tokens(tokenizer, prompt) <= limit]
    return dataset.select(keep), len(dataset) - len(keep)
