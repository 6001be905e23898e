"""Golden-answer metrics: BLEU, ROUGE-1/2/L, BERTScore and semantic similarity.

BLEU is sacrebleu's sentence BLEU (0-100, its default exponential smoothing); ROUGE is Google's
`rouge-score` (F1, Porter stemming). BERTScore follows Zhang et al. (2020) -- greedy matching of
contextual token embeddings by cosine: recall averages, over reference tokens, the best match in
the answer; precision the other way round; F1 their harmonic mean -- computed here with the
configured sentence-transformers encoder's token embeddings (no idf weighting, no baseline
rescaling), because the `bert-score` package would load its own hub model. Semantic similarity
is the cosine of the two sentence embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from evaluation.encoder import TextEncoder

GOLDEN_METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "bertscore_p", "bertscore_r", "bertscore_f1", "semantic_similarity")

def bleu(hypothesis: str, reference: str) -> float:
    """Sentence BLEU, 0-100 (100: identical)."""
    import sacrebleu

    if not hypothesis.strip() or not reference.strip():
        return 0.0
    return float(sacrebleu.sentence_bleu(hypothesis, [reference]).score)


_ROUGE_SCORER = None


def rouge(hypothesis: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1, each 0-1."""
    global _ROUGE_SCORER
    if _ROUGE_SCORER is None:
        from rouge_score import rouge_scorer

        _ROUGE_SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = _ROUGE_SCORER.score(reference, hypothesis)  # rouge-score takes (target, prediction)
    return {name: float(score.fmeasure) for name, score in scores.items()}


@dataclasses.dataclass(frozen=True)
class BertScore:
    precision: float
    recall: float
    f1: float


def bertscore_from_tokens(candidate: np.ndarray, reference: np.ndarray) -> BertScore:
    """BERTScore from unit-length token embeddings (rows): greedy max-cosine matching."""
    if len(candidate) == 0 or len(reference) == 0:
        return BertScore(0.0, 0.0, 0.0)
    similarity = candidate @ reference.T  # (candidate tokens, reference tokens)
    precision = float(similarity.max(axis=1).mean())
    recall = float(similarity.max(axis=0).mean())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return BertScore(precision, recall, f1)


def bertscore(candidates: Sequence[str], references: Sequence[str], encoder: TextEncoder) -> list[BertScore]:
    """BERTScore of each candidate against its reference (one encoder pass for all texts)."""
    if len(candidates) != len(references):
        raise ValueError("bertscore needs one reference per candidate")
    tokens = encoder.tokens(list(candidates) + list(references))
    n = len(candidates)
    return [bertscore_from_tokens(tokens[i], tokens[n + i]) for i in range(n)]


def semantic_similarity(texts_a: Sequence[str], texts_b: Sequence[str], encoder: TextEncoder) -> list[float]:
    """Cosine of sentence embeddings, pairwise by position (0 when either text is empty)."""
    if len(texts_a) != len(texts_b):
        raise ValueError("semantic_similarity needs texts of equal count")
    vectors = encoder.sentences(list(texts_a) + list(texts_b))
    n = len(texts_a)
    return [
        float(vectors[i] @ vectors[n + i]) if texts_a[i].strip() and texts_b[i].strip() else 0.0
        for i in range(n)
    ]


def golden_metrics(answers: Sequence[str], references: Sequence[str], encoder: TextEncoder) -> list[dict[str, float]]:
    """Every golden-answer metric for each (answer, reference) pair."""
    scores = bertscore(answers, references, encoder)
    similarities = semantic_similarity(answers, references, encoder)
    results = []
    for answer, reference, score, similarity in zip(answers, references, scores, similarities):
        row = {"bleu": bleu(answer, reference), **rouge(answer, reference)}
        row.update(bertscore_p=score.precision, bertscore_r=score.recall, bertscore_f1=score.f1,
                   semantic_similarity=similarity)
        results.append(row)
    return results
