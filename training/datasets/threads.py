"""The thread model of the build: a cleaned thread with its question and its answers (replies
to the post long enough to be more than a quip), and the per-thread seeded draws that make a
rebuild byte-identical whatever order the threads come in."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corpus import ThreadsMissingError, load_threads
from textutils import clip
from training.datasets.config import DatasetBuildError, DatasetsConfig


@dataclasses.dataclass(frozen=True)
class Thread:
    thread_id: str
    subreddit: str
    title: str
    body: str
    permalink: str
    comments: tuple[dict, ...]  # best first, as cleaned

    def question(self, max_chars: int) -> str:
        title = self.title.strip()
        budget = max_chars - len(title) - 2
        # A body cut to a few words reads worse than none: drop it when the title fills the budget.
        body = clip(self.body.strip(), budget, at_sentence=True) if self.body.strip() and budget >= 40 else ""
        return f"{title}\n\n{body}" if body else title


def is_answer(comment: Mapping, config: DatasetsConfig) -> bool:
    """A reply to the post itself, long enough to be more than a quip."""
    return int(comment.get("depth", 0)) == 0 and len(comment["body"].strip()) >= config.answer_min_chars


def thread_answers(thread: Thread, config: DatasetsConfig) -> list[dict]:
    return [c for c in thread.comments if is_answer(c, config)]


def hash_unit(seed: int, salt: str, thread_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, salt, thread id): stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}:{salt}:{thread_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def thread_rng(seed: int, salt: str, thread_id: str) -> random.Random:
    return random.Random(f"{seed}:{salt}:{thread_id}")  # str seeds hash with SHA-512: reproducible


WORD_RE = re.compile(r"[a-z0-9']+")


def words(text: str) -> set[str]:
    return set(WORD_RE.findall(text.casefold()))


def comment_list(comments: Any) -> list[dict]:
    # A Sequence-of-struct column reads back as a dict of lists; accept both layouts.
    if isinstance(comments, Mapping):
        keys = list(comments)
        comments = [dict(zip(keys, values)) for values in zip(*(comments[k] for k in keys))]
    result = []
    for comment in comments or []:
        result.append({
            "comment_id": str(comment.get("comment_id", "")),
            "body": str(comment.get("body") or ""),
            "score": int(comment.get("score") or 0),
            "created_utc": int(comment.get("created_utc") or 0),
            "depth": int(comment.get("depth") or 0),
        })
    return result


def load_thread_records(path: Path) -> list[dict]:
    try:
        return load_threads(path).to_list()
    except (ThreadsMissingError, ValueError) as err:
        raise DatasetBuildError(str(err)) from err
