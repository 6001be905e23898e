"""Retrieval: a Chroma store of Reddit travel threads embedded with sentence-transformers.

    build_index(settings) -> IndexReport         index (incrementally) the cleaned threads
    Retriever.from_settings(settings).search(q)  -> list[Hit], best first
    python -m retrieval index | query "..."      the same from the command line

Names are imported on first use: training imports retrieval.chunking and must not pay for
chromadb or sentence-transformers. ThreadsMissingError is the corpus's (corpus/threads.py).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "RetrievalConfig": "retrieval.config",
    "Embedder": "retrieval.embedder",
    "EmbedderIdentity": "retrieval.embedder",
    "IndexMissingError": "retrieval.store",
    "EmbedderMismatchError": "retrieval.store",
    "ChromaUnavailableError": "retrieval.store",
    "ChromaConfig": "retrieval.config",
    "BUILD_COMMAND": "retrieval.store",
    "IndexReport": "retrieval.indexing",
    "ThreadsMissingError": "corpus.threads",
    "build_index": "retrieval.indexing",
    "Hit": "retrieval.search",
    "ReplySpan": "retrieval.search",
    "Retriever": "retrieval.search",
    "build_where": "retrieval.search",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
