""""What travellers said": reply metadata in the index, extraction with the real embedder and
Chroma, the shared sentence splitter, the chat feedback table (SQLite and PostgreSQL) and its
KTO export, and the figure on hand-written paraphrases of the demo threads."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import home_settings, index_threads, thread_record

REPO = Path(__file__).resolve().parent.parent
PARAPHRASES = REPO / "tests" / "data" / "evidence_paraphrases.jsonl"
LONG_REPLY = " ".join(f"Filler sentence number {i} about nothing in particular." for i in range(30))

THREADS = [
    thread_record(
        "ev1", "lisbon", "Do I need cash in Lisbon?", "Are cards accepted in small cafes and on trams?",
        ["I had a great time and the weather was lovely all week long. Cards are accepted almost everywhere in "
         "Lisbon, even in tiny cafes.", "The tram 28 ticket machine on board only takes coins, so keep a few euros."],
        created_utc=1_714_000_000,
    ),
    thread_record(
        "ev2", "JapanTravel", "Narita airport to Shinjuku cheapest option?", "Landing at 6pm with one suitcase.",
        ["Take the Keisei Access Express and change at Nippori; it costs about 1,300 yen.",
         "Is this a joke? The Skyliner is obviously nicer."],
    ),
    # Long enough for several chunks: replies cross chunk boundaries.
    thread_record("ev3", "VisitingIceland", "Northern lights in Iceland: which month?", "First trip, flexible dates.",
                  [LONG_REPLY + " Go between late September and March and check the aurora forecast.", "Bring crampons."]),
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return home_settings(tmp_path_factory, "evidence")


@pytest.fixture(scope="module")
def retriever(settings):
    from retrieval import Retriever

    index_threads(settings, THREADS)
    return Retriever.from_settings(settings)


@pytest.fixture(scope="module")
def evidence_config(settings):
    from chatbot.evidence import EvidenceConfig

    return EvidenceConfig.from_settings(settings)


def test_one_sentence_splitter_keeps_verbatim_sentences():
    from textutils import split_sentences

    text = "Take the Keisei line. It costs 1,300 yen!\n- Change at Nippori\n2) Or ride the Skyliner? Yes."
    assert split_sentences(text) == [
        "Take the Keisei line.", "It costs 1,300 yen!", "Change at Nippori", "Or ride the Skyliner?", "Yes."
    ]
    assert split_sentences(text, min_chars=10) == ["Take the Keisei line.", "It costs 1,300 yen!", "Change at Nippori",
                                                   "Or ride the Skyliner?"]
    assert all(piece in text for piece in split_sentences(text))  # spans of the text, so quotes can be checked
    assert split_sentences("") == [] and split_sentences(None) == []


def test_chunks_carry_each_reply_span_score_and_date(retriever):
    for hit in retriever.search("northern lights month Iceland aurora", k=10):
        if hit.thread_id != "ev3":
            continue
        assert hit.replies, "chunk metadata lost its replies"
        for span in hit.replies:
            body = hit.text[span.start : span.end]
            thread = THREADS[2]
            comment = next(c for c in thread["comments"] if c["comment_id"] == span.comment_id)
            assert body and body in comment["body"]
            assert (span.score, span.created_utc) == (comment["score"], comment["created_utc"])
    hit = retriever.search("Do I need cash in Lisbon?", k=1)[0]
    assert [(s.comment_id, s.score) for s in hit.replies] == [("cev10", 10), ("cev11", 9)]
    assert hit.text[hit.replies[1].start : hit.replies[1].end] == THREADS[0]["comments"][1]["body"]


def test_evidence_quotes_the_answering_reply_sentence_with_its_own_link(retriever, evidence_config):
    from chatbot.evidence import extract_evidence

    question = "Will tiny cafes in Lisbon take a credit card?"
    evidence = extract_evidence(question, retriever.search(question, k=4), retriever.embedder, evidence_config)
    assert 1 <= len(evidence) <= evidence_config.sentences
    best = evidence[0]
    assert best.text == "Cards are accepted almost everywhere in Lisbon, even in tiny cafes."
    assert best.thread_id == "ev1" and best.subreddit == "lisbon" and best.reply_score == 10
    assert best.permalink == "https://www.reddit.com/r/lisbon/comments/ev1/x/cev10/" and best.date == "2024-04-24"
    assert [e.similarity for e in evidence] == sorted((e.similarity for e in evidence), reverse=True)
    # Only replies are evidence: never the post's own title or body, never a question.
    everything = extract_evidence(question, retriever.search(question, k=4), retriever.embedder,
                                  dataclasses.replace(evidence_config, sentences=50))
    texts = [e.text for e in everything]
    assert "Are cards accepted in small cafes and on trams?" not in texts
    assert "Is this a joke?" not in texts and len(texts) == len(set((e.thread_id, e.text) for e in everything))


def test_overlapping_chunks_give_each_sentence_once_and_no_fragments(retriever, evidence_config):
    from chatbot.evidence import candidate_sentences

    hits = [h for h in retriever.search("aurora forecast Iceland", k=10) if h.thread_id == "ev3"]
    assert len(hits) > 1, "the long thread should span several chunks"
    sentences = [c.text for c in candidate_sentences(hits, evidence_config)]
    assert len(sentences) == len(set(sentences))
    whole = set(f"Filler sentence number {i} about nothing in particular." for i in range(30))
    whole |= {"Go between late September and March and check the aurora forecast."}
    assert set(sentences) <= whole, f"fragments: {set(sentences) - whole}"


def test_an_index_without_reply_metadata_still_gives_evidence(retriever, evidence_config):
    import dataclasses

    from chatbot.evidence import extract_evidence

    question = "Will tiny cafes in Lisbon take a credit card?"
    old_hits = [dataclasses.replace(h, replies=()) for h in retriever.search(question, k=4)]
    best = extract_evidence(question, old_hits, retriever.embedder, evidence_config)[0]
    assert best.text == "Cards are accepted almost everywhere in Lisbon, even in tiny cafes."
    assert best.reply_score is None and best.permalink == "https://www.reddit.com/r/lisbon/comments/ev1/x/"


def test_the_first_evidence_sentence_comes_from_the_right_thread_on_paraphrases(settings, evidence_config):
    """Hand-written paraphrases of demo threads (not tuned against); bench/evidence_bench.py prints the same."""
    from chatbot.rag import RagChat
    from retrieval import RetrievalConfig, Retriever, build_index
    from training.ingest import ingest_to_threads

    demo = settings.with_overrides({"paths": {"home": str(settings.path("home") / "demo")}})
    ingest_to_threads(demo, inputs=[REPO / "data" / "demo"], progress=False)
    build_index(demo, progress=False)
    config = RetrievalConfig.from_settings(demo)
    rag = RagChat(None, Retriever.from_settings(demo), config.top_k, followup_max_words=config.followup_max_words,
                  evidence=evidence_config)
    items = [json.loads(line) for line in PARAPHRASES.read_text().splitlines() if line.strip()]
    assert len(items) >= 25
    right = [bool(ev) and ev[0].thread_id == item["thread_id"] for item in items for ev in [rag.evidence_for(item["question"])]]
    share = sum(right) / len(right)
    print(f"\nfirst evidence sentence from the right thread: {share:.3f} ({sum(right)}/{len(right)})")
    assert share >= 0.8


# ------------------------------------------------------------------------- chat feedback (👍/👎)
SESSION = "a" * 64
OTHER = "b" * 64
PROMPT = [{"role": "system", "content": "You are Wayfarer."}, {"role": "user", "content": "Cash in Lisbon?"}]


def _feedback_round_trip(store):
    first = store.record_chat_feedback(session=SESSION, model="raft", prompt=PROMPT[1:], completion="Cards work.",
                                       liked=True, message_index=1)
    # The same session changing its mind on the same answer replaces its click.
    again = store.record_chat_feedback(session=SESSION, model="raft", prompt=PROMPT[1:], completion="Cards work.",
                                       liked=False, message_index=1)
    assert again == first
    store.record_chat_feedback(session=OTHER, model="qlora", prompt=PROMPT[1:], completion="Bring cash.",
                               liked=True, message_index=1)
    rows = {row.session_hash: row for row in store.chat_feedback()}
    assert len(rows) == 2 and rows[SESSION].liked is False and rows[OTHER].liked is True
    assert rows[SESSION].prompt == PROMPT[1:] and rows[SESSION].completion == "Cards work."
    with pytest.raises(ValueError):
        store.record_chat_feedback(session="not-a-hash", model="raft", prompt=PROMPT, completion="x", liked=True,
                                   message_index=1)
    with pytest.raises(ValueError):
        store.record_chat_feedback(session=SESSION, model="raft", prompt=PROMPT, completion="x", liked="yes",
                                   message_index=1)
    assert len(store.chat_feedback()) == 2  # refused clicks change nothing


def test_chat_feedback_on_sqlite_and_a_version_1_store_is_upgraded(tmp_path):
    from arena.store import SCHEMA_VERSION, SQLiteVoteStore

    path = tmp_path / "votes.sqlite3"
    # A store written by the previous schema: no chat_feedback table, version 1.
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    conn.commit()
    conn.close()
    store = SQLiteVoteStore(path)
    assert SCHEMA_VERSION >= 3 and store.schema_version() == SCHEMA_VERSION
    _feedback_round_trip(store)


def test_chat_feedback_on_postgres(postgres_dsn):
    from arena.store_postgres import PostgresVoteStore

    store = PostgresVoteStore(postgres_dsn)
    try:
        _feedback_round_trip(store)
    finally:
        store.close()


def test_chat_feedback_is_exported_as_a_kto_split(tmp_path, settings):
    from datasets import load_from_disk

    from arena.config import ArenaConfig
    from arena.export import CHAT_FEEDBACK_DIR, export_votes
    from arena.store import SQLiteVoteStore

    store = SQLiteVoteStore(tmp_path / "votes.sqlite3")
    _feedback_round_trip(store)
    report = export_votes(store, ArenaConfig.from_settings(settings), tmp_path / "datasets")
    assert sum(report.chat_feedback.values()) == 2 and "chat feedback" in report.summary()
    exported = load_from_disk(str(tmp_path / "datasets" / CHAT_FEEDBACK_DIR))
    rows = [row for split in exported.values() for row in split]
    assert sorted(row["label"] for row in rows) == [False, True]
    row = next(r for r in rows if r["label"] is False)
    assert row["prompt"] == PROMPT[1:] and row["completion"] == [{"role": "assistant", "content": "Cards work."}]
    assert row["thread_id"] == f"chat-{SESSION[:16]}"
