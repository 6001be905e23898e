"""RAG metrics in the Ragas sense, computed locally with the sentence encoder.

`ragas` itself is not used: it drives every metric through an LLM behind langchain (its install
pulls ~30 packages, downgrades pinned ones, and tiktoken fetches files from the internet), so
the documented definitions are implemented here, with embedding similarity standing in for
the LLM's yes/no calls:

faithfulness       share of answer statements (sentences) supported by the retrieved context:
                   a statement is supported when some context sentence has cosine >= threshold.
answer relevance   Ragas embeds questions an LLM generates from the answer and averages their
                   cosine with the question; here the answer itself is embedded (cosine of
                   question and answer).
context precision  with the golden reference: sum over ranks k of precision@k * v_k, divided by
                   the number of relevant chunks (v_k = 1 when chunk k's cosine with the
                   reference is >= threshold); 0 when none is relevant.
context recall     share of reference sentences attributable to the context (some context
                   sentence with cosine >= threshold).

Faithfulness and the context metrics exist only for answers given with retrieved documents
(None otherwise); as in Ragas, an answer without statements has no faithfulness (None).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluation.encoder import TextEncoder
from textutils import split_sentences

RAG_METRICS = ("faithfulness", "answer_relevance", "context_precision", "context_recall")
STATEMENT_MIN_CHARS = 3  # shorter pieces ("OK.", "1.") are no statement to support


def _statements(text: str) -> list[str]:
    return split_sentences(text, min_chars=STATEMENT_MIN_CHARS)


def _supported_share(claims: Sequence[str], context_sentences: Sequence[str], encoder: TextEncoder, threshold: float) -> float | None:
    if not claims:
        return None
    if not context_sentences:
        return 0.0
    vectors = encoder.sentences(list(claims) + list(context_sentences))
    best = (vectors[: len(claims)] @ vectors[len(claims):].T).max(axis=1)
    return float(np.mean(best >= threshold))


def faithfulness(answer: str, contexts: Sequence[str], encoder: TextEncoder, threshold: float) -> float | None:
    context_sentences = [s for context in contexts for s in _statements(context)]
    return _supported_share(_statements(answer), context_sentences, encoder, threshold)


def context_recall(reference: str, contexts: Sequence[str], encoder: TextEncoder, threshold: float) -> float | None:
    context_sentences = [s for context in contexts for s in _statements(context)]
    return _supported_share(_statements(reference), context_sentences, encoder, threshold)


def average_precision(relevant: Sequence[bool]) -> float:
    """Ragas context precision from the ranked relevance flags v_1..v_K."""
    hits, total = 0, 0.0
    for rank, is_relevant in enumerate(relevant, start=1):
        if is_relevant:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def context_precision(reference: str, contexts: Sequence[str], encoder: TextEncoder, threshold: float) -> float | None:
    if not contexts:
        return None
    vectors = encoder.sentences([reference, *contexts])
    similarity = vectors[1:] @ vectors[0]
    return average_precision([bool(s >= threshold) for s in similarity])


def answer_relevance(question: str, answer: str, encoder: TextEncoder) -> float:
    if not question.strip() or not answer.strip():
        return 0.0
    vectors = encoder.sentences([question, answer])
    return float(vectors[0] @ vectors[1])


def rag_metrics(
    question: str,
    answer: str,
    reference: str,
    contexts: Sequence[str],
    encoder: TextEncoder,
    *,
    support_threshold: float,
    context_relevance_threshold: float,
) -> dict[str, float | None]:
    with_context = bool(contexts)
    return {
        "faithfulness": faithfulness(answer, contexts, encoder, support_threshold) if with_context else None,
        "answer_relevance": answer_relevance(question, answer, encoder),
        "context_precision": context_precision(reference, contexts, encoder, context_relevance_threshold) if with_context else None,
        "context_recall": context_recall(reference, contexts, encoder, support_threshold) if with_context else None,
    }
