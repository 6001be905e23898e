"""The one sentence splitter: RAFT quotes (training), the support metrics (evaluation) and the
"What travellers said" evidence (chatbot) all cut text the same way.

A regex rather than a tokenizer model (nltk punkt, spaCy): Reddit replies are informal, the
pieces must stay verbatim spans of the text (a quote is checked by substring search), and this
must import without downloads. The rule: split at line breaks and after . ! ? followed by white
space, and drop a list marker ("- ", "* ", "1. ", "> ") at the front of a piece.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LIST_MARKER = re.compile(r"^(?:[-*•>]+|\d+[.)])\s+")


def split_sentences(text: str, min_chars: int = 1) -> list[str]:
    """Verbatim sentences of `text`, in order; pieces shorter than `min_chars` are dropped."""
    pieces = []
    for line in (text or "").splitlines():
        for sentence in _SENTENCE_END.split(line):
            sentence = _LIST_MARKER.sub("", sentence.strip()).strip()
            if sentence and len(sentence) >= min_chars:
                pieces.append(sentence)
    return pieces
