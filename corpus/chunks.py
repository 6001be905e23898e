"""Chunk ids: chunk n of thread t is "t-n", cut from thread_document_text by a chunker.

The chunker (retrieval.chunking.TokenChunker: the embedder's tokens) is passed in, so this module
stays free of tokenizers; indexing and the RAFT datasets call the same chunk_thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from corpus.text import thread_document_text


def chunk_id(thread_id: str, number: int) -> str:
    return f"{thread_id}-{number}"


def thread_of_chunk(chunk: str) -> str:
    """The thread id of chunk id `chunk` (thread ids may contain "-"; the number never does)."""
    return chunk.rsplit("-", 1)[0]


def chunk_thread(thread: Mapping[str, Any], chunker: Any, max_comments: int) -> list[tuple[str, str]]:
    """(chunk id, text) of a thread, cut by `chunker.chunk(text)`: the one rule indexing and the
    RAFT datasets both use."""
    comments: Iterable[Mapping] = thread.get("comments") or []
    text = thread_document_text(str(thread.get("title") or ""), str(thread.get("body") or ""), comments, max_comments)
    return [(chunk_id(thread["thread_id"], n), piece) for n, piece in enumerate(chunker.chunk(text))]
