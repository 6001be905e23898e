"""Index cleaned threads into Chroma, incrementally.

Each thread's document text is cut by corpus.chunk_thread with retrieval.chunking's chunker into
chunks counted in the embedder's tokens (never longer than it reads); chunk n of thread t has
id "t-n" (corpus/). A chunk is embedded only when its text is new or changed (compared by
a content hash kept in its metadata), so re-running the indexer on the same threads embeds and
writes nothing. The collection mirrors the threads dataset it was last built from: chunks of
threads that got shorter, disappeared or became golden (held out for evaluation) are removed.

Each chunk's metadata also lists the replies it holds (`replies`: id, score, date and character
span within the chunk), so the chat can cite the very reply a sentence comes from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

from corpus import chunk_thread, load_golden_thread_ids, load_threads, reply_spans, thread_document_text
from retrieval.chunking import TokenChunker, chunker_from_settings
from retrieval.config import RetrievalConfig
from retrieval.embedder import Embedder
from retrieval.store import open_client, open_for_build, other_embedder_collections

# ingest writes the threads; build writes golden_thread_ids.json, which indexing leaves out.
THREADS_COMMAND = "python -m training ingest && python -m training build"


@dataclasses.dataclass
class IndexReport:
    collection: str
    created: bool = False
    threads: int = 0
    golden_excluded: int = 0
    chunks: int = 0  # chunks in the collection afterwards
    added: int = 0
    updated: int = 0  # text changed: embedded again
    metadata_updated: int = 0  # same text, new score/title...: written without embedding
    unchanged: int = 0
    removed: int = 0
    batch_size: int = 0
    batches: int = 0
    largest_batch: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    notices: list[str] = dataclasses.field(default_factory=list)

    @property
    def embedded(self) -> int:
        return self.added + self.updated

    @property
    def chunks_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def summary(self) -> str:
        rate = f"{self.chunks_per_second:.1f} chunks/s embedded" if self.embedded else "nothing to embed"
        lines = [
            *self.notices,
            f"collection {self.collection}: {self.chunks} chunks from {self.threads} threads"
            + (f" ({self.golden_excluded} golden threads left out)" if self.golden_excluded else ""),
            f"added {self.added}, updated {self.updated}, metadata updated {self.metadata_updated}, "
            f"unchanged {self.unchanged}, removed {self.removed}",
            f"{self.seconds:.1f} s, {rate} (batches of at most {self.batch_size})",
        ]
        if self.embedded or self.removed or self.metadata_updated:
            lines.append("a running app keeps the index it opened: restart it to serve these changes")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class IndexedChunk:
    """One chunk as the index stores it: corpus id, text, and its Chroma metadata."""

    chunk_id: str
    text: str
    metadata: dict


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _chunk_replies(spans: list[dict], chunk_start: int, chunk_length: int) -> str:
    """The replies overlapping one chunk, offsets relative to the chunk, as JSON (Chroma metadata
    values are scalars). Read back by retrieval.search.Hit.replies."""
    inside = []
    for span in spans:
        start, end = span["start"] - chunk_start, span["end"] - chunk_start
        if end <= 0 or start >= chunk_length:
            continue
        inside.append({**span, "start": max(start, 0), "end": min(end, chunk_length)})
    return json.dumps(inside, separators=(",", ":"))


def thread_chunks(thread: dict, config: RetrievalConfig, chunker: TokenChunker) -> list[IndexedChunk]:
    comments = thread.get("comments") or []
    text = thread_document_text(thread["title"], thread.get("body") or "", comments, config.max_comments)
    spans = reply_spans(text, comments, config.max_comments)
    chunks = []
    chunk_start = 0
    for number, (chunk_id, chunk) in enumerate(chunk_thread(thread, chunker, config.max_comments)):
        # Chunks are stripped slices of `text`, in order: find where this one starts.
        found = text.find(chunk, chunk_start)
        chunk_start = found if found >= 0 else chunk_start
        metadata = {
            "thread_id": str(thread["thread_id"]),
            "chunk": number,
            "subreddit": str(thread.get("subreddit") or ""),
            "score": int(thread.get("score") or 0),
            "created_utc": int(thread.get("created_utc") or 0),
            "permalink": str(thread.get("permalink") or ""),
            "title": str(thread.get("title") or ""),
            "content_hash": content_hash(chunk),
            "replies": _chunk_replies(spans, chunk_start, len(chunk)) if found >= 0 else "[]",
        }
        chunks.append(IndexedChunk(chunk_id, chunk, metadata))
    return chunks


def _existing_metadata(collection, page: int) -> dict[str, dict]:
    existing: dict[str, dict] = {}
    offset = 0
    while True:
        got = collection.get(include=["metadatas"], limit=page, offset=offset)
        for chunk_id, metadata in zip(got["ids"], got["metadatas"]):
            existing[chunk_id] = metadata or {}
        if len(got["ids"]) < page:
            return existing
        offset += page


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def build_index(
    settings,
    *,
    threads_path: Path | None = None,
    rebuild: bool = False,
    prune_other_embedders: bool = False,
    progress: bool = True,
) -> IndexReport:
    """Bring the configured embedder's collection up to date with the threads dataset."""
    started = time.perf_counter()
    config = RetrievalConfig.from_settings(settings)
    threads = load_threads(Path(threads_path) if threads_path else settings.path("threads"), THREADS_COMMAND)
    golden = load_golden_thread_ids(settings.path("datasets"))
    embedder = Embedder.from_settings(settings)
    chunker = chunker_from_settings(settings)
    client = open_client(settings)  # the local folder or the Chroma server (retrieval.chroma)
    collection, created = open_for_build(settings, config.collection, embedder.identity, rebuild=rebuild)
    batch_size = min(config.write_batch_size, client.get_max_batch_size())
    report = IndexReport(collection=collection.name, created=created, batch_size=batch_size)

    others = other_embedder_collections(client, config.collection, embedder.identity)
    if others and created:
        report.notices.append(
            f"embedder is now {embedder.identity.describe()}: building the new collection {collection.name}; "
            "vectors of different embedders are never mixed"
        )
    for name, identity in others:
        if prune_other_embedders:
            client.delete_collection(name)
            report.notices.append(f"deleted collection {name} ({identity.describe()})")
        else:
            report.notices.append(
                f"collection {name} ({identity.describe()}) is kept unused; `--prune` deletes it"
            )

    existing = _existing_metadata(collection, client.get_max_batch_size())
    wanted: set[str] = set()
    to_embed: list[IndexedChunk] = []
    to_refresh: list[IndexedChunk] = []
    for thread in threads:
        if str(thread["thread_id"]) in golden:
            report.golden_excluded += 1
            continue
        report.threads += 1
        for chunk in thread_chunks(thread, config, chunker):
            wanted.add(chunk.chunk_id)
            old = existing.get(chunk.chunk_id)
            if old is None:
                report.added += 1
                to_embed.append(chunk)
            elif old.get("content_hash") != chunk.metadata["content_hash"]:
                report.updated += 1
                to_embed.append(chunk)
            elif old != chunk.metadata:
                report.metadata_updated += 1
                to_refresh.append(chunk)
            else:
                report.unchanged += 1

    stale = sorted(set(existing) - wanted)
    for batch in _batches(stale, batch_size):
        collection.delete(ids=batch)
    report.removed = len(stale)
    for batch in _batches(to_refresh, batch_size):
        collection.update(ids=[c.chunk_id for c in batch], metadatas=[c.metadata for c in batch])

    embed_started = time.perf_counter()
    bar = _progress(len(to_embed), progress)
    try:
        for batch in _batches(to_embed, batch_size):
            vectors = embedder.embed([c.text for c in batch], batch_size=config.embed_batch_size)
            collection.upsert(
                ids=[c.chunk_id for c in batch],
                embeddings=vectors,
                documents=[c.text for c in batch],
                metadatas=[c.metadata for c in batch],
            )
            report.batches += 1
            report.largest_batch = max(report.largest_batch, len(batch))
            bar.update(len(batch))
    finally:
        bar.close()
    report.embed_seconds = time.perf_counter() - embed_started
    report.chunks = collection.count()
    report.seconds = time.perf_counter() - started
    return report


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="chunk", desc="embedding", disable=not enabled or total == 0)
