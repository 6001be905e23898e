"""The arena vote store on real SQLite, session identity, rate limits and battle pairing."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from arena.battle import NotEnoughModelsError, pick_pair
from arena.sessions import RateLimiter, flagged_sessions, hash_session, load_session_salt
from arena.store import BattleError, SQLiteVoteStore, VoteRejected

SALT = "test-salt"


def session(name: str) -> str:
    return hash_session(SALT, name)


def new_battle(store, who="alice", question="Is the JR pass worth it?", **changes) -> str:
    fields = dict(
        session=session(who),
        question=question,
        model_a="raft",
        model_b="base",
        messages_a=[{"role": "user", "content": question}],
        messages_b=[{"role": "user", "content": question}],
        doc_ids=["abc1-0", "xyz9-2"],
        sampling={"temperature": 0.7, "max_new_tokens": 64},
    )
    fields.update(changes)
    return store.create_battle(**fields)


@pytest.fixture
def store(tmp_path):
    return SQLiteVoteStore(tmp_path / "votes.sqlite3")


def test_store_uses_wal_and_records_every_field(store, tmp_path):
    assert store.journal_mode().lower() == "wal"
    with sqlite3.connect(tmp_path / "votes.sqlite3") as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    battle_id = new_battle(store)
    assert len(battle_id) == 32 and int(battle_id, 16) >= 0  # uuid4 hex
    store.finish_battle(battle_id, "Yes if you travel far.", "It depends.")
    receipt = store.record_vote(battle_id, "model_a", session("alice"))
    assert (receipt.model_a, receipt.model_b, receipt.duplicate) == ("raft", "base", False)

    record = store.battle(battle_id)
    assert record.question == "Is the JR pass worth it?"
    assert (record.answer_a, record.answer_b) == ("Yes if you travel far.", "It depends.")
    assert record.doc_ids == ["abc1-0", "xyz9-2"] and record.sampling["max_new_tokens"] == 64
    assert record.session_hash == session("alice") and "alice" not in record.session_hash
    assert record.created_at <= record.finished_at <= record.voted_at and record.vote == "model_a"
    assert [v.battle_id for v in store.votes()] == [battle_id]
    # A second store object on the same file (another process) sees the same data.
    assert SQLiteVoteStore(tmp_path / "votes.sqlite3").battle(battle_id) == record


def test_rejected_votes_have_clear_reasons_and_change_nothing(store):
    unfinished = new_battle(store)
    with pytest.raises(VoteRejected, match="complete") as err:
        store.record_vote(unfinished, "model_a", session("alice"))
    assert err.value.reason == VoteRejected.UNFINISHED
    with pytest.raises(VoteRejected) as err:
        store.record_vote("0" * 32, "model_a", session("alice"))
    assert err.value.reason == VoteRejected.UNKNOWN_BATTLE
    store.finish_battle(unfinished, "a", "b")
    with pytest.raises(VoteRejected) as err:
        store.record_vote(unfinished, "model_a", session("mallory"))
    assert err.value.reason == VoteRejected.WRONG_SESSION
    with pytest.raises(VoteRejected) as err:
        store.record_vote(unfinished, "A", session("alice"))
    assert err.value.reason == VoteRejected.INVALID_VOTE
    assert store.votes() == []

    store.record_vote(unfinished, "tie", session("alice"))
    with pytest.raises(VoteRejected, match="already has a vote") as err:
        store.record_vote(unfinished, "model_b", session("alice"))
    assert err.value.reason == VoteRejected.ALREADY_VOTED
    assert [v.vote for v in store.votes()] == ["tie"]


def test_the_same_vote_twice_is_counted_once(store):
    battle_id = new_battle(store)
    store.finish_battle(battle_id, "a", "b")
    first = store.record_vote(battle_id, "both_bad", session("alice"))
    again = store.record_vote(battle_id, "both_bad", session("alice"))
    assert not first.duplicate and again.duplicate and again.voted_at == first.voted_at
    assert len(store.votes()) == 1


def test_raw_identifiers_are_refused_as_sessions(store):
    with pytest.raises(ValueError, match="salted sha256"):
        new_battle(store, session="203.0.113.7")
    with pytest.raises(BattleError, match="two different models"):
        new_battle(store, model_b="raft")


def test_fifty_concurrent_voters_are_all_stored_exactly_once(tmp_path):
    path = tmp_path / "votes.sqlite3"
    setup = SQLiteVoteStore(path)
    battles = []
    for i in range(50):
        battle_id = new_battle(setup, who=f"voter{i}")
        setup.finish_battle(battle_id, f"answer a {i}", f"answer b {i}")
        battles.append((battle_id, f"voter{i}", ("model_a", "model_b", "tie", "both_bad")[i % 4]))
    start = threading.Barrier(50)

    def vote_twice(item):
        battle_id, who, choice = item
        client = SQLiteVoteStore(path)  # one store (connection set) per client, like separate processes
        start.wait()
        first = client.record_vote(battle_id, choice, session(who))
        second = client.record_vote(battle_id, choice, session(who))  # a double click
        return first.duplicate, second.duplicate

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(vote_twice, battles))
    assert results == [(False, True)] * 50
    stored = setup.votes()
    assert len(stored) == 50 and len({v.battle_id for v in stored}) == 50
    assert Counter(v.vote for v in stored) == {"model_a": 13, "model_b": 13, "tie": 12, "both_bad": 12}


def test_follow_up_turns_keep_the_pair_and_sides(store):
    first = new_battle(store)
    record = store.battle(first)
    follow = new_battle(store, question="And for Hokkaido?", conversation_id=record.conversation_id, turn=1)
    assert [b.battle_id for b in store.conversation(record.conversation_id)] == [first, follow]
    with pytest.raises(BattleError, match="same two models"):
        new_battle(store, conversation_id=record.conversation_id, turn=2, model_a="base", model_b="raft")
    with pytest.raises(BattleError, match="no turn 4"):
        new_battle(store, conversation_id=record.conversation_id, turn=5)


def test_session_salt_comes_from_the_environment_or_a_private_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ARENA_TEST_SALT", raising=False)
    salt_file = tmp_path / "votes.sqlite3.salt"
    salt = load_session_salt("ARENA_TEST_SALT", salt_file)
    assert len(salt) == 64 and oct(os.stat(salt_file).st_mode & 0o777) == "0o600"
    assert load_session_salt("ARENA_TEST_SALT", salt_file) == salt  # persisted
    monkeypatch.setenv("ARENA_TEST_SALT", "from-env")
    assert load_session_salt("ARENA_TEST_SALT", salt_file) == "from-env"
    assert hash_session("from-env", "abc") != hash_session(salt, "abc")


def test_rate_limiter_refuses_over_the_limit_until_the_window_passes():
    now = [0.0]
    limiter = RateLimiter(3, 60.0, clock=lambda: now[0])
    assert [limiter.allow("s") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("other")
    assert limiter.retry_after("s") == pytest.approx(60.0)
    now[0] = 60.0
    assert limiter.allow("s")


def test_sessions_voting_too_fast_are_flagged():
    sessions = ["bot"] * 100 + ["human"] * 100
    times = [i * 1.0 for i in range(100)] + [i * 600.0 for i in range(100)]
    assert flagged_sessions(sessions, times, votes=50, minutes=10) == {"bot"}
    assert flagged_sessions(sessions, times, votes=101, minutes=10**6) == set()


def test_pairs_are_uniform_without_weights_and_follow_weights_when_set():
    rng = random.Random(0)
    models = ["base", "qlora", "raft", "rlhf"]
    # No weights configured: the Chatbot Arena divides by zero here; we sample uniformly.
    counts = Counter(m for _ in range(4000) for m in pick_pair(models, {}, rng))
    assert all(abs(counts[m] / 8000 - 0.25) < 0.03 for m in models)
    sides = Counter(pick_pair(models, {"raft": 10}, rng)[0] for _ in range(4000))
    assert abs(sides["raft"] / 4000 - 0.5) < 0.05  # the heavy model is not stuck on side A
    pairs = [pick_pair(models, {"rlhf": 0, "qlora": 0}, rng) for _ in range(200)]
    assert all(set(p) == {"base", "raft"} for p in pairs)
    with pytest.raises(NotEnoughModelsError, match="at least two models"):
        pick_pair(["base"], {}, rng)
    with pytest.raises(NotEnoughModelsError):
        pick_pair(["base", "raft"], {"raft": 0}, rng)
