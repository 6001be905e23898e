"""The arena vote store on real SQLite and a real PostgreSQL server (tests/postgres_server.py),
session identity, rate limits and battle pairing. Every store test runs on both backends."""

from __future__ import annotations

import contextlib
import os
import random
import re
import sqlite3
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from arena.battle import NotEnoughModelsError, pick_pair
from arena.sessions import flagged_sessions, hash_session, load_session_salt
from arena.store import SCHEMA_VERSION, BattleError, PostgresVoteStore, SQLiteVoteStore, VoteRejected, open_vote_store
from settings import ConfigError, load_settings

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


class Backend:
    """One empty vote store location on one backend: `open()` gives a store object on it (as a
    separate process would have), `sql()` runs raw SQL there and returns the rows."""

    def __init__(self, name: str, location):
        self.name = name
        self.location = location
        self._opened: list = []

    def open(self):
        store = SQLiteVoteStore(self.location) if self.name == "sqlite" else PostgresVoteStore(self.location)
        self._opened.append(store)
        return store

    def sql(self, statement: str) -> list[tuple]:
        if self.name == "sqlite":
            with sqlite3.connect(self.location) as conn:
                return conn.execute(statement).fetchall()
        with psycopg.connect(self.location, autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        location = tmp_path / "votes.sqlite3"
    else:
        location = request.getfixturevalue("postgres_dsn")  # a fresh database on the test server
    opened = Backend(request.param, location)
    yield opened
    opened.close_all()


@pytest.fixture
def store(backend):
    return backend.open()


def test_store_records_every_field(store, backend):
    battle_id = new_battle(store)
    assert uuid.UUID(hex=battle_id).hex == battle_id and uuid.UUID(hex=battle_id).version == 4  # uuid4 hex
    store.finish_battle(battle_id, "Yes if you travel far.", "It depends.")
    receipt = store.record_vote(battle_id, "model_a", session("alice"))
    assert (receipt.model_a, receipt.model_b, receipt.duplicate) == ("raft", "base", False)

    record = store.battle(battle_id)
    assert record.question == "Is the JR pass worth it?"
    assert (record.answer_a, record.answer_b) == ("Yes if you travel far.", "It depends.")
    assert record.doc_ids == ["abc1-0", "xyz9-2"] and record.sampling == {"temperature": 0.7, "max_new_tokens": 64}
    assert record.messages_a == [{"role": "user", "content": "Is the JR pass worth it?"}]
    assert record.session_hash == session("alice") and "alice" not in record.session_hash
    assert record.created_at <= record.finished_at <= record.voted_at and record.vote == "model_a"
    assert record.voted_at == receipt.voted_at  # floats come back exactly
    assert [v.battle_id for v in store.votes()] == [battle_id]
    assert store.battles(voted_only=True) == [record] and store.battles() == [record]
    assert store.battle("0" * 32) is None
    # A second store object on the same location (another process) sees the same data.
    assert backend.open().battle(battle_id) == record


def test_the_schema_is_versioned_and_a_newer_one_is_refused(store, backend):
    # One row per version applied: a new store runs version 1 and then every migration.
    applied = [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    assert sorted(backend.sql("SELECT version FROM schema_version")) == applied
    tables = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if backend.name == "sqlite"
        else "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    assert {"schema_version", "battles", "votes"} <= {row[0] for row in backend.sql(tables)}
    backend.open()  # opening again applies nothing twice
    assert sorted(backend.sql("SELECT version FROM schema_version")) == applied
    backend.sql(f"INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION + 1})")
    with pytest.raises(RuntimeError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this code"):
        backend.open()


def journal_mode(store: SQLiteVoteStore) -> str:
    """The journal mode a connection to the store's file sees (WAL is a property of the file)."""
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_sqlite_store_uses_wal(tmp_path):
    store = SQLiteVoteStore(tmp_path / "votes.sqlite3")
    assert journal_mode(store).lower() == "wal"
    with sqlite3.connect(tmp_path / "votes.sqlite3") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


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
    with pytest.raises(ValueError, match="salted HMAC-SHA256"):
        new_battle(store, session="203.0.113.7")
    with pytest.raises(BattleError, match="two different models"):
        new_battle(store, model_b="raft")


def test_fifty_concurrent_voters_are_all_stored_exactly_once(backend):
    setup = backend.open()
    battles = []
    for i in range(50):
        battle_id = new_battle(setup, who=f"voter{i}")
        setup.finish_battle(battle_id, f"answer a {i}", f"answer b {i}")
        battles.append((battle_id, f"voter{i}", ("model_a", "model_b", "tie", "both_bad")[i % 4]))
    start = threading.Barrier(50)

    def vote_twice(item):
        battle_id, who, choice = item
        client = backend.open()  # one store (connection set) per client, like separate processes
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


def test_concurrent_votes_on_one_battle_count_once(backend):
    """Many tabs of one session vote on the same battle at the same moment: exactly one vote is
    stored, the same choice again is a duplicate, the other choice is refused. Half the voters
    share one store (its connection pool), half have their own (separate processes)."""
    store = backend.open()
    battle_id = new_battle(store)
    store.finish_battle(battle_id, "a", "b")
    voters = 24
    start = threading.Barrier(voters)

    def vote(i):
        choice = ("model_a", "model_b")[i % 2]
        client = store if i % 4 < 2 else backend.open()
        assert client.battle(battle_id).finished  # connected and warm before the race starts
        start.wait()
        try:
            receipt = client.record_vote(battle_id, choice, session("alice"))
        except VoteRejected as err:
            return choice, err.reason
        return choice, receipt

    with ThreadPoolExecutor(max_workers=voters) as pool:
        outcomes = list(pool.map(vote, range(voters)))
    receipts = [r for _, r in outcomes if not isinstance(r, str)]
    winners = [r for r in receipts if not r.duplicate]
    assert len(winners) == 1
    won = winners[0].vote
    assert all(r.vote == won and r.voted_at == winners[0].voted_at for r in receipts)
    assert len(receipts) == voters // 2  # every voter with the winning choice got a receipt
    assert all(reason == VoteRejected.ALREADY_VOTED for choice, reason in outcomes if isinstance(reason, str))
    assert [(v.battle_id, v.vote) for v in store.votes()] == [(battle_id, won)]


def test_follow_up_turns_keep_the_pair_and_sides(store):
    first = new_battle(store)
    record = store.battle(first)
    follow = new_battle(store, question="And for Hokkaido?", conversation_id=record.conversation_id, turn=1)
    assert [b.battle_id for b in store.conversation(record.conversation_id)] == [first, follow]
    with pytest.raises(BattleError, match="same two models"):
        new_battle(store, conversation_id=record.conversation_id, turn=2, model_a="base", model_b="raft")
    with pytest.raises(BattleError, match="no turn 4"):
        new_battle(store, conversation_id=record.conversation_id, turn=5)


def test_store_keeps_one_session_salt_unless_the_environment_sets_it(backend, monkeypatch):
    monkeypatch.delenv("ARENA_TEST_SALT", raising=False)
    backend.open()  # the schema exists; now several processes start at once
    starters = 8
    start = threading.Barrier(starters)

    def first_start(_):
        client = backend.open()
        start.wait()
        return client.session_salt("ARENA_TEST_SALT")

    with ThreadPoolExecutor(max_workers=starters) as pool:
        salts = set(pool.map(first_start, range(starters)))
    assert len(salts) == 1  # they all agree on the one salt created first
    salt = salts.pop()
    assert re.fullmatch(r"[0-9a-f]{64}", salt), salt  # 32 random bytes as hex
    assert backend.open().session_salt("ARENA_TEST_SALT") == salt  # kept by the store
    if backend.name == "sqlite":
        assert (backend.location.parent / "votes.sqlite3.salt").read_text() == salt
    monkeypatch.setenv("ARENA_TEST_SALT", "from-env")
    assert backend.open().session_salt("ARENA_TEST_SALT") == "from-env"


def test_open_vote_store_picks_the_backend_from_the_configuration(postgres_dsn, tmp_path, monkeypatch):
    for name in ("WAYFARER__ARENA__VOTE_STORE", "WAYFARER__ARENA__POSTGRES_DSN_ENV", "WAYFARER_VOTES_DSN"):
        monkeypatch.delenv(name, raising=False)
    home = {"paths": {"home": str(tmp_path / "home")}}
    sqlite_store = open_vote_store(load_settings(profile="local", overrides=home))
    assert isinstance(sqlite_store, SQLiteVoteStore) and sqlite_store.path == tmp_path / "home" / "votes.sqlite3"

    monkeypatch.setenv("WAYFARER__ARENA__VOTE_STORE", "postgres")
    with pytest.raises(RuntimeError, match="WAYFARER_VOTES_DSN"):
        open_vote_store(load_settings(profile="local", overrides=home))
    monkeypatch.setenv("WAYFARER__ARENA__POSTGRES_DSN_ENV", "MY_VOTES_DSN")
    monkeypatch.delenv("MY_VOTES_DSN", raising=False)
    with pytest.raises(RuntimeError, match="MY_VOTES_DSN"):
        open_vote_store(load_settings(profile="local", overrides=home))

    monkeypatch.setenv("MY_VOTES_DSN", postgres_dsn)
    store = open_vote_store(load_settings(profile="local", overrides=home))
    try:
        assert isinstance(store, PostgresVoteStore)
        battle_id = new_battle(store)
    finally:
        store.close()
    direct = PostgresVoteStore(postgres_dsn)
    try:
        assert direct.battle(battle_id).question == "Is the JR pass worth it?"
    finally:
        direct.close()
    assert sqlite_store.battles() == []  # the battle went to PostgreSQL

    monkeypatch.setenv("WAYFARER__ARENA__VOTE_STORE", "mysql")
    with pytest.raises(ConfigError, match="arena.vote_store must be one of sqlite, postgres"):
        open_vote_store(load_settings(profile="local", overrides=home))


def test_session_salt_comes_from_the_environment_or_a_private_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ARENA_TEST_SALT", raising=False)
    salt_file = tmp_path / "votes.sqlite3.salt"
    salt = load_session_salt("ARENA_TEST_SALT", salt_file)
    assert len(salt) == 64 and oct(os.stat(salt_file).st_mode & 0o777) == "0o600"
    assert load_session_salt("ARENA_TEST_SALT", salt_file) == salt  # persisted
    monkeypatch.setenv("ARENA_TEST_SALT", "from-env")
    assert load_session_salt("ARENA_TEST_SALT", salt_file) == "from-env"
    assert hash_session("from-env", "abc") != hash_session(salt, "abc")


# The vote rate limits live in the vote store now (per session and per client address, shared by
# every process): tests/test_vote_integrity.py.


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
