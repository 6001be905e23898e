""""What travellers said": the reply sentences that best answer the question, extracted, not generated.

The small model's prose can be wrong while retrieval is right, so under each RAG answer the
traveller also sees what Reddit users actually wrote: the retrieved chunks are cut into the
sentences of their replies (textutils.split_sentences, the tree's one splitter), each sentence
is embedded with the retrieval embedder and ranked by cosine similarity to the question, and
the best few are shown with their reply's score, subreddit, date and permalink.

The ranking uses the embedder (retrieval/embedder.py) because it is what we ship offline; a
cross-encoder would rank better but none is installable here without the Hub. Only reply text
counts as evidence: the title and body of the post are the question, not an answer.

Which reply a sentence belongs to comes from the chunk's `replies` metadata (retrieval.indexing
writes the span, id, score and date of every reply in the chunk). An index built before that
field existed still works: sentences after a "Reply:" marker count as replies, cited with the
thread's link and no reply score.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Sequence

from corpus import REPLY_PREFIX
from settings import ConfigError, Settings, build_dataclass
from textutils import split_sentences

_REPLY_MARKER = re.compile(r"(?:^|\n\n)" + re.escape(REPLY_PREFIX))  # corpus.thread_document_text's layout


@dataclasses.dataclass(frozen=True)
class EvidenceConfig:
    sentences: int
    min_chars: int
    max_chars: int
    recent_days: int

    def __post_init__(self) -> None:
        if self.sentences < 1:
            raise ConfigError("evidence.sentences must be at least 1")
        if not 1 <= self.min_chars <= self.max_chars:
            raise ConfigError("evidence: need 1 <= min_chars <= max_chars")
        if self.recent_days < 1:
            raise ConfigError("evidence.recent_days must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> "EvidenceConfig":
        return build_dataclass(cls, settings.section("evidence"))


@dataclasses.dataclass(frozen=True)
class EvidenceSentence:
    text: str  # verbatim from the reply (raw: escape before display)
    similarity: float  # cosine similarity to the question
    thread_id: str
    doc_id: str  # the chunk it was found in
    title: str
    subreddit: str
    permalink: str  # the reply's own link when known, else the thread's
    reply_score: int | None  # None: the index does not know the reply (built before reply metadata)
    created_utc: int  # the reply's date (the thread's when the reply is unknown)

    @property
    def date(self) -> str:
        if not self.created_utc:
            return ""
        return dt.datetime.fromtimestamp(self.created_utc, dt.timezone.utc).strftime("%Y-%m-%d")


@dataclasses.dataclass(frozen=True)
class _Reply:
    text: str
    comment_id: str
    score: int | None
    created_utc: int
    starts_cut: bool = False  # the chunk begins inside this reply: its first sentence may be a fragment


def reply_permalink(thread_permalink: str, comment_id: str) -> str:
    """Reddit's link to one comment: the thread's permalink followed by the comment id."""
    if not thread_permalink or not comment_id:
        return thread_permalink
    return f"{thread_permalink.rstrip('/')}/{comment_id}/"


def _replies(hit) -> list[_Reply]:
    if hit.replies:
        return [
            # A reply that starts at offset 0 began before the chunk ("Reply: " would come first).
            _Reply(hit.text[span.start : span.end], span.comment_id, span.score, span.created_utc or hit.created_utc,
                   starts_cut=span.start == 0)
            for span in hit.replies
            if span.end > span.start
        ]
    # An older index: the text after each "Reply:" marker, attributed to the thread.
    parts = _REPLY_MARKER.split(hit.text)
    return [_Reply(part, "", None, hit.created_utc) for part in parts[1:] if part.strip()]


def candidate_sentences(hits: Sequence, config: EvidenceConfig) -> list[EvidenceSentence]:
    """Every quotable reply sentence of the hits (similarity not yet known), each once: chunks
    overlap, so the same sentence of the same reply can come back twice."""
    seen: set[tuple[str, str, str]] = set()
    candidates = []
    for hit in hits:
        for reply in _replies(hit):
            sentences = split_sentences(reply.text)
            for sentence in sentences[1:] if reply.starts_cut else sentences:
                sentence = " ".join(sentence.split())
                if not config.min_chars <= len(sentence) <= config.max_chars or sentence.endswith("?"):
                    continue
                key = (hit.thread_id, reply.comment_id, sentence.casefold())
                if key in seen:
                    continue
                seen.add(key)
                candidates.append(
                    EvidenceSentence(
                        text=sentence,
                        similarity=0.0,
                        thread_id=hit.thread_id,
                        doc_id=hit.doc_id,
                        title=hit.title,
                        subreddit=hit.subreddit,
                        permalink=reply_permalink(hit.permalink, reply.comment_id),
                        reply_score=reply.score,
                        created_utc=reply.created_utc,
                    )
                )
    return candidates


def extract_evidence(question: str, hits: Sequence, embedder, config: EvidenceConfig) -> list[EvidenceSentence]:
    """The `config.sentences` reply sentences of `hits` most similar to `question`, best first
    (ties keep retrieval order). `embedder` returns unit vectors (retrieval.Embedder)."""
    if not question or not question.strip():
        return []
    candidates = candidate_sentences(hits, config)
    if not candidates:
        return []
    vectors = embedder.embed([question.strip()] + [c.text for c in candidates])
    similarities = vectors[1:] @ vectors[0]
    order = sorted(range(len(candidates)), key=lambda i: (-float(similarities[i]), i))
    return [
        dataclasses.replace(candidates[i], similarity=float(similarities[i])) for i in order[: config.sentences]
    ]
