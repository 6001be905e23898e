"""Query the index: the chunks nearest a question, optionally filtered by subreddit, score, date."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from raft import Document
from retrieval.config import RetrievalConfig
from retrieval.embedder import Embedder
from retrieval.store import open_for_search


@dataclasses.dataclass(frozen=True)
class ReplySpan:
    """One reply inside a chunk (retrieval.indexing writes these): text[start:end] is its body."""

    comment_id: str
    score: int
    created_utc: int
    start: int
    end: int


def _reply_spans(value) -> tuple[ReplySpan, ...]:
    """The chunk's `replies` metadata; an index built before it existed has none."""
    try:
        items = json.loads(value) if isinstance(value, str) else []
        return tuple(
            ReplySpan(str(i["comment_id"]), int(i["score"]), int(i["created_utc"]), int(i["start"]), int(i["end"]))
            for i in items
        )
    except (ValueError, TypeError, KeyError):
        return ()


@dataclasses.dataclass(frozen=True)
class Hit:
    doc_id: str  # "<thread_id>-<chunk>"
    thread_id: str
    chunk: int
    text: str
    title: str
    subreddit: str
    permalink: str
    score: int
    created_utc: int
    similarity: float  # cosine similarity to the query, 1 = same direction
    replies: tuple[ReplySpan, ...] = ()  # the replies in `text`, with their own score and date

    def to_document(self) -> Document:
        return Document(
            doc_id=self.doc_id, text=self.text, title=self.title, subreddit=self.subreddit, permalink=self.permalink
        )


def _timestamp(value: int | float | dt.date | dt.datetime | None) -> int | None:
    """Seconds since the epoch; a date means its midnight UTC, a naive datetime is UTC."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(value.timestamp())
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc).timestamp())
    return int(value)


def build_where(
    subreddit: str | None = None,
    min_score: int | None = None,
    since: int | dt.date | dt.datetime | None = None,
    until: int | dt.date | dt.datetime | None = None,
) -> dict | None:
    """A Chroma `where` filter (None when nothing is filtered)."""
    clauses = []
    if subreddit:
        clauses.append({"subreddit": subreddit})
    if min_score is not None:
        clauses.append({"score": {"$gte": int(min_score)}})
    if since is not None:
        clauses.append({"created_utc": {"$gte": _timestamp(since)}})
    if until is not None:
        clauses.append({"created_utc": {"$lte": _timestamp(until)}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


class Retriever:
    """Nearest chunks of indexed threads; thread-safe (one Chroma client, a locked embedder)."""

    def __init__(self, collection, embedder: Embedder, config: RetrievalConfig, subreddits: list[str] | None = None):
        self._collection = collection
        self.embedder = embedder
        self.config = config
        # Filters match the canonical spelling stored in the index; users type any case.
        self._canonical = {name.casefold(): name for name in subreddits or []}

    @classmethod
    def from_settings(cls, settings) -> "Retriever":
        """Open the configured embedder's index (local folder or Chroma server, retrieval.chroma);
        IndexMissingError when it is not built yet, ChromaUnavailableError when the server is down."""
        config = RetrievalConfig.from_settings(settings)
        embedder = Embedder.from_settings(settings)
        collection = open_for_search(settings, config.collection, embedder.identity)
        return cls(collection, embedder, config, subreddits=settings.config.data.subreddits)

    @property
    def collection_name(self) -> str:
        return self._collection.name

    def count(self) -> int:
        return self._collection.count()

    def search(
        self,
        query: str,
        k: int | None = None,
        subreddit: str | None = None,
        min_score: int | None = None,
        since: int | dt.date | dt.datetime | None = None,
        until: int | dt.date | dt.datetime | None = None,
        min_similarity: float | None = None,
    ) -> list[Hit]:
        """The `k` (default retrieval.top_k) most similar chunks, best first, above min_similarity
        (default retrieval.min_similarity)."""
        if not query or not query.strip():
            return []
        k = self.config.top_k if k is None else int(k)
        if k < 1:
            raise ValueError("k must be at least 1")
        floor = self.config.min_similarity if min_similarity is None else min_similarity
        if subreddit:
            subreddit = self._canonical.get(subreddit.strip().removeprefix("r/").casefold(), subreddit.strip())
        vector = self.embedder.embed([query.strip()])
        result = self._collection.query(
            query_embeddings=vector,
            n_results=k,
            where=build_where(subreddit, min_score, since, until),
            include=["documents", "metadatas", "distances"],
        )
        hits = []
        for doc_id, text, metadata, distance in zip(
            result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0]
        ):
            similarity = 1.0 - float(distance)  # Chroma's cosine distance is 1 - cosine similarity
            if similarity < floor:
                continue
            hits.append(
                Hit(
                    doc_id=doc_id,
                    thread_id=str(metadata.get("thread_id", "")),
                    chunk=int(metadata.get("chunk", 0)),
                    text=text or "",
                    title=str(metadata.get("title", "")),
                    subreddit=str(metadata.get("subreddit", "")),
                    permalink=str(metadata.get("permalink", "")),
                    score=int(metadata.get("score", 0)),
                    created_utc=int(metadata.get("created_utc", 0)),
                    similarity=similarity,
                    replies=_reply_spans(metadata.get("replies")),
                )
            )
        return hits
