"""Vote integrity on the real vote store, on SQLite and on a real PostgreSQL server:
rate limits per session AND per client address kept in the store (shared by every process),
abuse flags that can trigger and keep flagged votes out of the leaderboard and the export,
HMAC hashes, the battle's documents, and the schema migration from version 1.

The store's clock is given as a plain function (unix seconds), so windows of minutes and days
are walked through deterministically, without waiting and without timed assertions."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from arena.export import prepare_export
from arena.leaderboard import leaderboard_from_store
from arena.records import RateLimit, StoredDocument, VoteRejected
from arena.sessions import client_network, hash_client, hash_session
from arena.store import SCHEMA_VERSION, PostgresVoteStore, SQLiteVoteStore
from arena.store_sql import schema_statements
from raft import Document, build_user_message
from settings import ConfigError
from tests.conftest import arena_config

SALT = "integrity-salt"
ATTACKER = hash_client(SALT, "198.51.100.23")
T0 = 1_800_000_000.0


class Clock:
    """The store's time source, moved by the test."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Location:
    """One empty store location on one backend; `open()` gives another store object on it, as
    another app process would have."""

    def __init__(self, backend: str, where):
        self.backend, self.where, self.opened = backend, where, []

    def open(self, clock=None):
        kwargs = {"clock": clock} if clock else {}
        store = SQLiteVoteStore(self.where, **kwargs) if self.backend == "sqlite" else PostgresVoteStore(self.where, **kwargs)
        self.opened.append(store)
        return store

    def sql(self, statement: str, params=()) -> list[tuple]:
        if self.backend == "sqlite":
            with sqlite3.connect(self.where) as conn:
                return conn.execute(statement, params).fetchall()
        with psycopg.connect(self.where, autocommit=True) as conn:
            cursor = conn.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path):
    where = tmp_path / "votes.sqlite3" if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")
    opened = Location(request.param, where)
    yield opened
    for store in opened.opened:
        store.close()


def finished_battle(store, session: str, client: str | None = None, models=("raft", "base"), **fields) -> str:
    question = fields.pop("question", "Is the JR pass worth it?")
    battle_id = store.create_battle(
        session=session, question=question, model_a=models[0], model_b=models[1],
        messages_a=[{"role": "user", "content": question}], messages_b=[{"role": "user", "content": question}],
        client=client, **fields,
    )
    store.finish_battle(battle_id, "answer a", "answer b")
    return battle_id


def attempt(store, session: str, client: str | None, limits, vote: str = "model_a"):
    """One vote attempt on a new battle of `session`: the receipt, or the VoteRejected."""
    battle_id = finished_battle(store, session, client)
    try:
        return store.record_vote(battle_id, vote, session, client=client, limits=limits)
    except VoteRejected as err:
        return err


# ------------------------------------------------------------------------------- rate limits
def test_a_thousand_votes_from_one_address_over_fresh_sessions_count_only_what_the_limits_allow(location):
    """The done-when test: a script opens a fresh session per vote (Gradio's session id is the
    client's to choose) from one address; one attempt every half second for 500 s."""
    clock = Clock()
    store = location.open(clock)
    config = arena_config()  # the shipped limits: 10 a minute, 60 an hour, 200 a day
    outcomes = []
    for i in range(1000):
        clock.now = T0 + 0.5 * i
        outcomes.append(attempt(store, hash_session(SALT, f"fresh-{i}"), ATTACKER, config.vote_limits()))
    admitted = [o for o in outcomes if not isinstance(o, VoteRejected)]
    refused = [o for o in outcomes if isinstance(o, VoteRejected)]
    # 10 in each minute, until the hour's 60 are spent.
    assert len(admitted) == config.max_votes_admitted(500.0) == 60
    assert [a.voted_at - T0 for a in admitted[:11]] == [0.5 * i for i in range(10)] + [60.0]
    assert all(r.reason == VoteRejected.RATE_LIMITED and r.retry_after_s > 0 for r in refused)
    assert "your network address" in str(refused[-1])
    stored = store.votes()
    assert len(stored) == 60 and {v.client_hash for v in stored} == {ATTACKER}
    assert len({v.session_hash for v in stored}) == 60  # every one from a fresh session

    # Another address is not held back by the attacker's limit.
    other = attempt(store, hash_session(SALT, "neighbour"), hash_client(SALT, "192.0.2.1"), config.vote_limits())
    assert not isinstance(other, VoteRejected)


def test_one_session_is_limited_even_without_an_address(location):
    clock = Clock()
    store = location.open(clock)
    session = hash_session(SALT, "one-tab")
    limits = [RateLimit(3, 60.0)]
    outcomes = [attempt(store, session, None, limits) for _ in range(4)]
    assert [isinstance(o, VoteRejected) for o in outcomes] == [False, False, False, True]
    assert outcomes[-1].retry_after_s == pytest.approx(60.0) and "this session" in str(outcomes[-1])
    clock.now += 60.0  # the window has passed
    assert not isinstance(attempt(store, session, None, limits), VoteRejected)


def test_a_refused_vote_changes_nothing_and_a_double_click_costs_nothing(location):
    store = location.open(Clock())
    limits = [RateLimit(1, 60.0)]
    session = hash_session(SALT, "clicker")
    battle_id = finished_battle(store, session, ATTACKER)
    first = store.record_vote(battle_id, "tie", session, client=ATTACKER, limits=limits)
    again = store.record_vote(battle_id, "tie", session, client=ATTACKER, limits=limits)
    assert not first.duplicate and again.duplicate  # the duplicate is answered before the limits
    refused = attempt(store, hash_session(SALT, "clicker-2"), ATTACKER, limits)
    assert isinstance(refused, VoteRejected) and refused.reason == VoteRejected.RATE_LIMITED
    assert [v.battle_id for v in store.votes()] == [battle_id]


def test_the_limits_are_shared_by_every_process_on_the_store(location):
    """Two app processes (two store objects) on one store: one address gets the limit once, not per process."""
    clock = Clock()
    processes = [location.open(clock), location.open(clock)]
    limits = [RateLimit(5, 3600.0)]
    outcomes = [attempt(processes[i % 2], hash_session(SALT, f"s{i}"), ATTACKER, limits) for i in range(12)]
    assert sum(not isinstance(o, VoteRejected) for o in outcomes) == 5


def test_concurrent_votes_from_one_address_never_pass_the_limit_together(location):
    """24 fresh sessions of one address vote at the same moment, each through its own store
    object (separate processes): exactly the limit is admitted. On PostgreSQL the writers
    really run concurrently; the voter lock is what keeps them from all counting 0 before them."""
    clock = Clock()  # frozen: every vote falls in the same window
    setup = location.open(clock)
    voters = 24
    battles = [(finished_battle(setup, hash_session(SALT, f"tab{i}"), ATTACKER), hash_session(SALT, f"tab{i}"))
               for i in range(voters)]
    stores = [location.open(clock) for _ in range(voters)]
    for store, (battle_id, _) in zip(stores, battles):
        assert store.battle(battle_id).finished  # connected and warm before the race
    start = threading.Barrier(voters)
    limits = [RateLimit(7, 60.0)]

    def vote(i):
        battle_id, session = battles[i]
        start.wait()
        try:
            return stores[i].record_vote(battle_id, "model_b", session, client=ATTACKER, limits=limits)
        except VoteRejected as err:
            return err.reason

    with ThreadPoolExecutor(max_workers=voters) as pool:
        outcomes = list(pool.map(vote, range(voters)))
    assert sum(not isinstance(o, str) for o in outcomes) == 7
    assert set(o for o in outcomes if isinstance(o, str)) == {VoteRejected.RATE_LIMITED}
    assert len(setup.votes()) == 7


# ------------------------------------------------------------------------------- abuse flags
def test_the_shipped_abuse_threshold_is_reachable_and_flags_a_client_at_the_limit():
    config = arena_config()
    assert config.abuse_votes <= config.max_votes_admitted(config.abuse_minutes * 60)
    # The thresholds the arena shipped before (1,000 votes in 10 minutes against 10 a minute)
    # could never flag anyone; such a configuration is now refused at start-up.
    with pytest.raises(ConfigError, match="can never be reached"):
        arena_config(max_votes_per_minute=10, abuse_votes=1000, abuse_minutes=10)


def test_a_flagged_client_is_left_out_of_the_board_and_the_export_and_counted(location):
    """With the shipped settings, a script voting from one address every 30 s for two hours gets
    120 votes admitted (60 an hour) and passes the 100 a day abuse threshold: its votes, all for
    the weaker model, are left out of the ratings and of the training export, and counted."""
    clock = Clock()
    store = location.open(clock)
    config = arena_config(export_validation_fraction=0.0)
    admitted = 0
    for i in range(240):
        clock.now = T0 + 30.0 * i
        outcome = attempt(store, hash_session(SALT, f"bot{i}"), ATTACKER, config.vote_limits(), vote="model_b")
        admitted += not isinstance(outcome, VoteRejected)
    assert admitted == 120
    # Three honest voters from three addresses prefer raft (model A).
    for i in range(3):
        clock.now += 600.0
        honest = attempt(store, hash_session(SALT, f"human{i}"), hash_client(SALT, f"192.0.2.{i + 10}"),
                         config.vote_limits(), vote="model_a")
        assert not isinstance(honest, VoteRejected)

    board = leaderboard_from_store(store, config)
    assert (board.votes_used, board.votes_excluded, board.flagged_votes) == (3, 120, 120)
    assert board.flagged_clients == 1 and board.flagged_sessions == 0  # every bot session voted once
    assert board.models == ["raft", "base"]
    included = leaderboard_from_store(store, arena_config(include_flagged_votes=True))
    assert included.votes_used == 123 and included.votes_excluded == 0 and included.flagged_votes == 120
    assert included.models == ["base", "raft"]  # what the bot would have made of the board

    prepared = prepare_export(store, config)
    assert prepared.pairs["train"] == 3 and prepared.flagged_votes_skipped == 120


# ------------------------------------------------------------------------------- hashes
def test_session_and_client_hashes_are_hmacs_and_ipv6_counts_by_its_64_network():
    expected = hmac.new(SALT.encode(), b"session\x00abc", hashlib.sha256).hexdigest()
    assert hash_session(SALT, "abc") == expected
    assert hash_client(SALT, "abc") != expected  # the same string as an address is another key
    assert hash_client("other-salt", "198.51.100.23") != ATTACKER
    assert hash_client(SALT, "2001:db8:1:2::1") == hash_client(SALT, "2001:db8:1:2:ffff::9")  # one /64
    assert hash_client(SALT, "2001:db8:1:3::1") != hash_client(SALT, "2001:db8:1:2::1")
    assert client_network("::ffff:198.51.100.23") == "198.51.100.23"
    assert hash_client(SALT, "::ffff:198.51.100.23") == ATTACKER


def test_the_store_refuses_a_raw_address_as_client(location):
    store = location.open()
    session = hash_session(SALT, "s")
    with pytest.raises(ValueError, match="never a raw id or address"):
        finished_battle(store, session, client="198.51.100.23")
    battle_id = finished_battle(store, session, ATTACKER)
    with pytest.raises(ValueError, match="never a raw id or address"):
        store.record_vote(battle_id, "tie", session, client="198.51.100.23")
    assert store.votes() == []


# ------------------------------------------------------------------------------- documents + schema
DOCUMENTS = [
    Document("t9-0", "Take the Narita Express. It costs 3,070 yen.", "Narita to Shinjuku", "JapanTravel",
             "https://www.reddit.com/r/JapanTravel/comments/t9/x/"),
    Document("a1-2", "The Keisei Skyliner is faster to Ueno.", "Airport trains", "JapanTravel", ""),
]


def test_a_battle_keeps_the_documents_it_showed_and_the_export_prompt_is_their_raft_prompt(location):
    store = location.open()
    question = "Cheapest way from Narita to Shinjuku?"
    shown = build_user_message(question, DOCUMENTS)
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": shown}]
    session = hash_session(SALT, "reader")
    battle_id = store.create_battle(session=session, question=question, model_a="raft", model_b="base",
                                    messages_a=messages, messages_b=messages, documents=DOCUMENTS, client=ATTACKER)
    store.finish_battle(battle_id, "Narita Express.", "Walk.")
    store.record_vote(battle_id, "model_a", session, client=ATTACKER)
    record = location.open().battle(battle_id)  # read back by another process
    assert record.documents == tuple(StoredDocument.of(d) for d in DOCUMENTS)
    assert record.documents[0].text == DOCUMENTS[0].text and record.documents[0].permalink.endswith("/t9/x/")
    assert record.doc_ids == ["t9-0", "a1-2"] and record.client_hash == ATTACKER

    prepared = prepare_export(store, arena_config(export_validation_fraction=0.0))
    row = prepared.datasets["arena_preference"]["train"][0]
    assert row["prompt"] == [{"role": "user", "content": shown}]  # documents sorted by id, as RAFT trains
    assert '<DOCUMENT id="a1-2"' in row["prompt"][0]["content"] and row["doc_ids"] == ["t9-0", "a1-2"]
    assert row["chosen"] == [{"role": "assistant", "content": "Narita Express."}]


def test_a_version_1_store_is_migrated_and_keeps_its_battles(location):
    """A store written by the previous release (schema 1, no documents, no client hashes)."""
    real = "REAL" if location.backend == "sqlite" else "DOUBLE PRECISION"
    for statement in schema_statements(real):
        location.sql(statement)
    location.sql("INSERT INTO schema_version (version) VALUES (1)")
    old_session = hash_session(SALT, "old")
    location.sql(
        "INSERT INTO battles (battle_id, conversation_id, turn, session_hash, question, model_a, model_b, messages_a, "
        "messages_b, doc_ids, sampling, created_at, answer_a, answer_b, finished_at) "
        "VALUES (?, ?, 0, ?, 'q', 'raft', 'base', '[]', '[]', '[\"t9-0\"]', '{}', 1.0, 'a', 'b', 2.0)",
        ("1" * 32, "1" * 32, old_session),
    )
    location.sql("INSERT INTO votes (battle_id, session_hash, vote, voted_at) VALUES (?, ?, 'model_a', 3.0)",
                 ("1" * 32, old_session))

    opened = [location.open() for _ in range(2)]  # opening twice migrates once
    assert [r[0] for r in location.sql("SELECT version FROM schema_version ORDER BY version")] == list(
        range(1, SCHEMA_VERSION + 1))
    old = opened[0].battle("1" * 32)
    assert old.doc_ids == ["t9-0"] and old.documents == () and old.client_hash is None and old.vote == "model_a"
    assert opened[1].votes()[0].client_hash is None
    new_id = finished_battle(opened[1], hash_session(SALT, "new"), ATTACKER, documents=DOCUMENTS)
    assert opened[0].battle(new_id).documents[1].doc_id == "a1-2"


def test_one_session_over_many_addresses_is_held_by_its_session_limit(location):
    store = location.open(Clock())
    limits = [RateLimit(2, 60.0)]
    session = hash_session(SALT, "roaming-tab")
    admitted = [not isinstance(attempt(store, session, hash_client(SALT, f"10.0.0.{i}"), limits), VoteRejected)
                for i in range(3)]
    assert admitted == [True, True, False]  # every address is new; the session is not
