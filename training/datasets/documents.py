"""The documents a prompt can hold: a thread's chunks (cut exactly as the index cuts them),
random chunks of other threads, and hard negatives (what retrieval ranks high from other threads)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import Any

from corpus import chunk_thread
from raft import Document
from retrieval.chunking import TokenChunker
from settings import Settings
from training.datasets.threads import Thread


@dataclasses.dataclass(frozen=True)
class Candidate:
    document: Document
    thread_id: str
    subreddit: str


def thread_chunks(thread: Thread, chunker: TokenChunker, max_comments: int) -> list[Candidate]:
    """The thread cut exactly as the index cuts it (the same chunk_thread: same text, ids)."""
    record = {"thread_id": thread.thread_id, "title": thread.title, "body": thread.body, "comments": thread.comments}
    return [
        Candidate(Document(doc_id=chunk_id, text=piece, title=thread.title,
                        subreddit=thread.subreddit, permalink=thread.permalink),
               thread.thread_id, thread.subreddit)
        for chunk_id, piece in chunk_thread(record, chunker, max_comments)
    ]


class DistractorPool:
    """Random chunks of other threads, drawn per thread from that thread's own generator."""

    def __init__(self, chunks_by_thread: Mapping[str, Sequence[Candidate]], allowed: Sequence[str]):
        self._chunks = chunks_by_thread
        self._threads = [tid for tid in sorted(allowed) if chunks_by_thread.get(tid)]

    def draw(self, rng: random.Random, count: int, exclude_thread: str, avoid_subreddit: str | None = None) -> list[Candidate]:
        """`count` chunks from distinct threads other than `exclude_thread` (fewer if the pool
        is that small); with `avoid_subreddit`, prefer threads of other subreddits."""
        candidates = [tid for tid in self._threads if tid != exclude_thread]
        if len(candidates) <= count:
            picked_threads = candidates
        else:
            picked_threads, seen = [], set()
            attempts = 0
            while len(picked_threads) < count and attempts < 50 * count:
                attempts += 1
                tid = candidates[rng.randrange(len(candidates))]
                if tid in seen:
                    continue
                if avoid_subreddit and attempts < 25 * count and self._chunks[tid][0].subreddit == avoid_subreddit:
                    continue
                seen.add(tid)
                picked_threads.append(tid)
            for tid in candidates:  # tiny pools with bad luck: fill in order
                if len(picked_threads) >= count:
                    break
                if tid not in seen:
                    seen.add(tid)
                    picked_threads.append(tid)
        return [self._chunks[tid][rng.randrange(len(self._chunks[tid]))] for tid in picked_threads]


class HardNegatives:
    """Chunks that retrieval ranks high for the question but that come from other threads."""

    def __init__(self, retriever: Any):
        self._retriever = retriever
        self.collection = f"{retriever.collection_name} ({retriever.count()} chunks)"

    @classmethod
    def open(cls, settings: Settings) -> tuple["HardNegatives | None", str | None]:
        """The retriever over the current index, or None with the reason it cannot be used."""
        try:
            from retrieval import Retriever
            from retrieval.store import store_exists
        except ImportError as err:
            return None, f"retrieval is not available ({err})"
        if not store_exists(settings):
            return None, f"no index at {settings.path('index')}"
        try:
            retriever = Retriever.from_settings(settings)
            retriever.search("travel", k=1)  # fails here, not mid-build, when the index is unusable
        except Exception as err:  # IndexMissingError, an empty or foreign store: all mean "no index"
            return None, f"{type(err).__name__}: {err}"
        return cls(retriever), None

    def find(self, question: str, count: int, allowed: set[str], exclude_thread: str) -> list[Candidate]:
        hits = self._retriever.search(question, k=max(4 * count, count + 8))
        found, threads = [], set()
        for hit in hits:
            if hit.thread_id == exclude_thread or hit.thread_id not in allowed or hit.thread_id in threads:
                continue
            threads.add(hit.thread_id)
            found.append(Candidate(hit.to_document(), hit.thread_id, hit.subreddit))
            if len(found) == count:
                break
        return found

    def served(self, question: str, allowed: set[str]) -> list[Document]:
        """The documents the chatbot would put in the prompt for `question` (retrieval.top_k
        above retrieval.min_similarity), from threads the row's split may see."""
        return [hit.to_document() for hit in self._retriever.search(question) if hit.thread_id in allowed]
