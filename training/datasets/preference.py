"""Preference pairs: the best reply chosen, a clearly lower-scored (or low-effort) reply
rejected, asked with the documents the chatbot would put in the prompt, and both written in the
RAFT answer format the RLHF model is served with (it starts from RAFT): each quotes the sentences
of its reply that the documents hold verbatim, or says that none does, then gives the reply.
Plain replies as targets taught DPO to drop the quoting format RAFT had learnt."""

from __future__ import annotations

from collections.abc import Sequence

from raft import Document, build_cot_answer, build_user_message
from textutils import clip
from training.datasets.config import DatasetsConfig
from training.datasets.documents import Candidate, DistractorPool, HardNegatives
from training.datasets.raft import ranked_quotes
from training.datasets.threads import Thread, thread_answers, thread_rng


def preference_documents(thread: Thread, question: str, chunks: Sequence[Candidate], pool: DistractorPool,
                          hard: HardNegatives | None, allowed: set[str], top_k: int,
                          config: DatasetsConfig) -> list[Document]:
    """The documents of a preference pair's prompt: RLHF starts from RAFT and is served with
    retrieval, so its pairs are asked the way the chatbot asks it. With an index: what the
    chatbot's search returns (the thread's own chunks included, as at serving time); without
    one: the thread's first chunk and random chunks of other threads, top_k in all."""
    if hard is not None:
        return hard.served(question, allowed | {thread.thread_id})
    rng = thread_rng(config.seed, "preference-documents", thread.thread_id)
    own = [chunks[0].document] if chunks else []
    return own + [c.document for c in pool.draw(rng, max(top_k - len(own), 0), thread.thread_id)]


def preference_pairs(thread: Thread, question: str, documents: Sequence[Document],
                      config: DatasetsConfig) -> list[dict]:
    answers = thread_answers(thread, config)
    if not answers:
        return []
    best = answers[0]
    # Replies to the post only: a reply to another comment is not an answer to the question.
    rejected = [
        c for c in thread.comments
        if c is not best and int(c.get("depth", 0)) == 0 and c["body"].strip()
        and c["body"].strip() != best["body"].strip()
        and (c["score"] <= best["score"] - config.preference_min_score_gap
             or (len(c["body"].strip()) < config.answer_min_chars and c["score"] < best["score"]))
    ]
    # The widest score gaps first: the pairs whose preference is the least doubtful.
    rejected.sort(key=lambda c: (c["score"], c.get("comment_id", ""), c["body"]))
    chosen_text = served_answer(best["body"], documents, config)
    user = build_user_message(question, documents)
    doc_ids = sorted(doc.doc_id for doc in documents)
    return [
        {
            "prompt": [{"role": "user", "content": user}],
            "chosen": [{"role": "assistant", "content": chosen_text}],
            "rejected": [{"role": "assistant", "content": served_answer(c["body"], documents, config)}],
            "thread_id": thread.thread_id,
            "doc_ids": doc_ids,
        }
        for c in rejected[: config.preference_max_pairs_per_thread]
    ]


def served_answer(reply: str, documents: Sequence[Document], config: DatasetsConfig) -> str:
    """A reply as the RAFT-format answer it would be at serving time: its most informative
    sentences that some document holds verbatim (up to raft_max_quotes) quoted, then the reply."""
    texts = [doc.text for doc in documents]
    quotes = [q for q in ranked_quotes(reply, config) if any(q in text for text in texts)][: config.raft_max_quotes]
    return build_cot_answer(quotes, clip(reply, config.preference_answer_max_chars, at_sentence=True))
