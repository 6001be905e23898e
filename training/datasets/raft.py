"""RAFT rows (arXiv 2403.10131): the question with the oracle chunk and k distractor chunks
(probability p) or distractors only (1 - p), and a chain-of-thought answer quoting the oracle;
a few "I don't know" rows whose documents come from unrelated threads."""

from __future__ import annotations

import re
from collections.abc import Sequence

from raft import Document, build_cot_answer, build_user_message
from textutils import clip, split_sentences
from training.datasets.config import RANDOM, RETRIEVAL, DatasetsConfig
from training.datasets.documents import Candidate, DistractorPool, HardNegatives
from training.datasets.schema import chat
from training.datasets.threads import WORD_RE, Thread, thread_rng


def informativeness(sentence: str) -> float:
    words = WORD_RE.findall(sentence.casefold())
    long_words = sum(1 for w in words if len(w) > 3)
    digits = sum(1 for w in words if any(ch.isdigit() for ch in w))  # prices, times, distances
    capitals = len(re.findall(r"(?<!^)(?<![.!?] )\b[A-Z][a-z]+", sentence))  # place names
    return long_words + 2 * digits + capitals - (3 if sentence.endswith("?") else 0)


def ranked_quotes(answer: str, config: DatasetsConfig) -> list[str]:
    """Sentences of the best reply worth quoting, the most informative first."""
    sentences = [s for s in split_sentences(answer) if len(s) <= config.raft_quote_max_chars and "##" not in s]
    candidates = [s for s in sentences if len(s) >= config.raft_quote_min_chars and not s.endswith("?")]
    candidates = candidates or sentences
    order = sorted(range(len(candidates)), key=lambda i: (-informativeness(candidates[i]), i))
    return [candidates[i] for i in order]


def find_oracle(chunks: Sequence[Candidate], ranked_quotes: Sequence[str], max_quotes: int) -> tuple[Candidate, list[str]] | None:
    """The first chunk holding the best quotable sentence verbatim (a sentence cut by a chunk
    boundary is in none), with up to `max_quotes` of the best sentences it holds, in text order."""
    for best in ranked_quotes:
        chunk = next((c for c in chunks if best in c.document.text), None)
        if chunk is None:
            continue
        held = [q for q in ranked_quotes if q in chunk.document.text][:max_quotes]
        return chunk, sorted(held, key=chunk.document.text.index)
    return None


def raft_row(thread: Thread, question: str, answer: str, chunks: Sequence[Candidate], pool: DistractorPool,
              hard: HardNegatives | None, allowed: set[str], config: DatasetsConfig) -> dict | None:
    rng = thread_rng(config.seed, "raft", thread.thread_id)
    k = config.raft_distractors
    if rng.random() < config.raft_idk_fraction:
        # Unrelated threads only (not hard negatives, which might well answer the question).
        distractors = pool.draw(rng, k + 1, thread.thread_id, avoid_subreddit=thread.subreddit)
        if not distractors:
            return None
        return _raft_example(thread, question, [c.document for c in distractors],
                    build_cot_answer([], config.raft_idk_answer), oracle_included=False, oracle_doc_id="",
                    source=RANDOM, idk=True)
    found = find_oracle(chunks, ranked_quotes(answer, config), config.raft_max_quotes)
    if found is None:
        return None
    oracle, quotes = found
    include_oracle = rng.random() < config.raft_oracle_probability
    wanted = k if include_oracle else k + 1  # the prompt holds k + 1 documents either way
    distractors = hard.find(question, wanted, allowed, thread.thread_id) if hard else []
    sources = {RETRIEVAL} if distractors else set()
    if len(distractors) < wanted:
        taken = {c.thread_id for c in distractors}
        extra = [c for c in pool.draw(rng, wanted + len(taken), thread.thread_id) if c.thread_id not in taken]
        distractors += extra[: wanted - len(distractors)]
        if extra:
            sources.add(RANDOM)
    documents = ([oracle.document] if include_oracle else []) + [c.document for c in distractors]
    # The paper keeps the quoting chain-of-thought answer when the oracle is left out: the model
    # learns to answer from memory of the training corpus when retrieval misses.
    target = build_cot_answer(quotes, clip(answer, config.raft_answer_max_chars, at_sentence=True))
    return _raft_example(thread, question, documents, target, oracle_included=include_oracle,
                oracle_doc_id=oracle.document.doc_id, source="+".join(sorted(sources)) or RANDOM, idk=False)


def _raft_example(thread: Thread, question: str, documents: Sequence[Document], target: str, *, oracle_included: bool,
         oracle_doc_id: str, source: str, idk: bool) -> dict:
    return {
        "messages": chat(build_user_message(question, documents), target),
        "thread_id": thread.thread_id,
        "oracle_included": oracle_included,
        "oracle_doc_id": oracle_doc_id,
        "doc_ids": sorted(doc.doc_id for doc in documents),
        "distractor_source": source,
        "idk": idk,
    }
