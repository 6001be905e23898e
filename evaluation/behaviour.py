"""Whether each model behaves as its method should, per answer: RAFT quotes its documents, no
model loops. These are the study's checks of the adapters themselves, next to the metrics that
compare answers with references.

verified_quote  the raw answer holds at least one ##begin_quote##...##end_quote## span, and
                every one occurs in one of the documents it was given (raft.check_quotes:
                case and whitespace aside): what the chat shows as verified quotes
                (raft.quotes_verified, as chatbot.rag uses it). None for an answer given without documents.
loops           one 4-gram of words and punctuation occurs 4 or more times in the answer
                ("no, no, no, no, ..."); bench/study_bench.py counts the same.

Both are a few lines over raft/'s parser and a Counter; no library defines them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

from raft import Document, check_quotes, parse_answer, quotes_verified

BEHAVIOUR_METRICS = ("verified_quote", "loops")
BEHAVIOUR_LABELS = {"verified_quote": "Answers with a verified quote", "loops": "Answers that loop"}
LOOP_NGRAM = 4  # words per n-gram ...
LOOP_TIMES = 4  # ... and how often one must occur for the answer to loop
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def has_verified_quote(raw_text: str, documents: Sequence[Mapping]) -> bool | None:
    """The answer quotes, and every quote is found in its documents (None without documents)."""
    if not documents:
        return None
    given = [Document(doc_id=str(d.get("doc_id", i)), text=d["text"]) for i, d in enumerate(documents)]
    return quotes_verified(check_quotes(parse_answer(raw_text).quotes, given))


def loops(text: str, ngram: int = LOOP_NGRAM, times: int = LOOP_TIMES) -> bool:
    """One n-gram of words and punctuation marks occurs `times` or more times."""
    words = _TOKEN_RE.findall(text.casefold())
    counts = Counter(tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1))
    return bool(counts) and max(counts.values()) >= times


def behaviour_metrics(raw_text: str, documents: Sequence[Mapping]) -> dict[str, float | None]:
    """The per-answer values (1.0 / 0.0, None where undefined), stored with the answer's scores."""
    quoted = has_verified_quote(raw_text, documents)
    return {"verified_quote": None if quoted is None else float(quoted), "loops": float(loops(raw_text))}
