"""A cleaned thread as one text: its title, body and best replies, each reply after REPLY_PREFIX.

This layout is what the index embeds, what RAFT documents quote and what the chat's evidence
splits back into replies (reply_spans), so it is written here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

REPLY_PREFIX = "Reply: "


def thread_document_text(title: str, body: str, comments: Iterable[Mapping], max_comments: int = 3) -> str:
    """The readable text of a cleaned thread: what is indexed, retrieved and quoted."""
    parts = [title.strip()]
    if body and body.strip():
        parts.append(body.strip())
    for comment in list(comments)[:max_comments]:
        text = str(comment.get("body", "")).strip()
        if text:
            parts.append(f"{REPLY_PREFIX}{text}")
    return "\n\n".join(parts)


def reply_spans(text: str, comments: Iterable[Mapping], max_comments: int) -> list[dict]:
    """Where each reply's body lies in `text` (thread_document_text of the same thread; character
    offsets), with the reply's own id, score and date: the chat's evidence cites the reply."""
    spans, cursor = [], 0
    for comment in list(comments)[:max_comments]:
        body = str(comment.get("body", "")).strip()
        if not body:
            continue
        start = text.find(f"{REPLY_PREFIX}{body}", cursor)
        if start < 0:  # cannot happen with thread_document_text's layout; never guess a span
            continue
        start += len(REPLY_PREFIX)
        cursor = start + len(body)
        spans.append({
            "comment_id": str(comment.get("comment_id") or ""),
            "score": int(comment.get("score") or 0),
            "created_utc": int(comment.get("created_utc") or 0),
            "start": start,
            "end": cursor,
        })
    return spans
