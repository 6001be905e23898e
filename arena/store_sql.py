"""The vote store's rules and schema, written once for every SQL backend.

Validation, rejection reasons, one short transaction per write, the identical vote twice counted
once, the vote rate limits, and the versioned schema with its migrations live here; a backend
(arena.store_sqlite, arena.store_postgres) only supplies connections, transactions and its SQL
dialect. Depends on arena.records and arena.sessions only.

Rate limits are counted in the `votes` table itself (indexed by session hash and by client hash
and time), inside the vote's own write transaction, so every app process sharing one database
shares the limits, and a refused vote leaves nothing behind. On PostgreSQL, where writers run
concurrently, the voter keys are locked first (advisory transaction locks, always in sorted
order, so two votes cannot deadlock) and two votes of one voter never both pass the count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from arena.records import (
    VOTE_CHOICES,
    BattleError,
    BattleRecord,
    ChatFeedbackRow,
    RateLimit,
    StoredDocument,
    VoteReceipt,
    VoteRejected,
    VoteRow,
)
from arena.sessions import check_session_hash, hash_session

SCHEMA_VERSION = 4

# Version 1: the original schema. {real} is the backend's 8-byte float type; JSON columns are
# TEXT holding json.dumps output, so every backend reads back exactly the records it was given.
_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS battles (
    battle_id       TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    turn            INTEGER NOT NULL,
    session_hash    TEXT NOT NULL,
    question        TEXT NOT NULL,
    model_a         TEXT NOT NULL,
    model_b         TEXT NOT NULL,
    messages_a      TEXT NOT NULL,
    messages_b      TEXT NOT NULL,
    doc_ids         TEXT NOT NULL,
    sampling        TEXT NOT NULL,
    created_at      {real} NOT NULL,
    answer_a        TEXT,
    answer_b        TEXT,
    finished_at     {real},
    UNIQUE (conversation_id, turn)
);
CREATE INDEX IF NOT EXISTS battles_by_conversation ON battles (conversation_id, turn);
CREATE TABLE IF NOT EXISTS votes (
    battle_id    TEXT PRIMARY KEY REFERENCES battles (battle_id),
    session_hash TEXT NOT NULL,
    vote         TEXT NOT NULL CHECK (vote IN ('model_a', 'model_b', 'tie', 'both_bad')),
    voted_at     {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS votes_by_time ON votes (voted_at);
"""

# Migration to version N: statements run in one transaction with the version row, on SQLite and
# PostgreSQL alike (both take ADD COLUMN with a constant default). A store at version N-1 is
# brought to N when it is opened; a new store runs version 1 and then every migration, so there
# is one path to the current schema.
MIGRATIONS: dict[int, str] = {
    # 2: the documents a battle showed (arena pairs carry them into training), the client
    # address hash, and the indexes the per-voter rate limits count with.
    2: """
ALTER TABLE battles ADD COLUMN documents TEXT NOT NULL DEFAULT '[]';
ALTER TABLE battles ADD COLUMN client_hash TEXT;
ALTER TABLE votes ADD COLUMN client_hash TEXT;
CREATE INDEX IF NOT EXISTS votes_by_session ON votes (session_hash, voted_at);
CREATE INDEX IF NOT EXISTS votes_by_client ON votes (client_hash, voted_at);
""",
    # 3: 👍/👎 on chat answers (chatbot.ui), exported as arena.export's chat_feedback KTO split.
    3: """
CREATE TABLE IF NOT EXISTS chat_feedback (
    feedback_id  TEXT PRIMARY KEY,
    session_hash TEXT NOT NULL,
    model        TEXT NOT NULL,
    prompt       TEXT NOT NULL,
    completion   TEXT NOT NULL,
    liked        INTEGER NOT NULL CHECK (liked IN (0, 1)),
    created_at   {real} NOT NULL
);
""",
    # 4: the adapter version each side ran (modeling.adapters: rlhf@3 vs rlhf@4 after a hot swap);
    # NULL: the base model, an unversioned adapter, or a battle stored before schema 4. A vote
    # is on one battle, so it carries the battle's versions (VoteRow reads them with the join).
    4: """
ALTER TABLE battles ADD COLUMN version_a INTEGER;
ALTER TABLE battles ADD COLUMN version_b INTEGER;
""",
}

_BATTLE_COLUMNS = (
    "b.battle_id, b.conversation_id, b.turn, b.session_hash, b.question, b.model_a, b.model_b, "
    "b.messages_a, b.messages_b, b.doc_ids, b.sampling, b.created_at, b.answer_a, b.answer_b, "
    "b.finished_at, v.vote, v.voted_at, b.documents, b.client_hash, b.version_a, b.version_b"
)
# The voter keys a rate limit counts by: the column of `votes` each one is stored in.
_VOTER_COLUMNS = ("session_hash", "client_hash")


def _statements(script: str, real_type: str) -> list[str]:
    return [s.strip() for s in script.format(real=real_type).split(";") if s.strip()]


def schema_statements(real_type: str) -> list[str]:
    """The version-1 schema as single statements, with `real_type` for the float columns."""
    return _statements(_SCHEMA_V1, real_type)


def _battle_from_row(row: Sequence) -> BattleRecord:
    return BattleRecord(
        battle_id=row[0],
        conversation_id=row[1],
        turn=row[2],
        session_hash=row[3],
        question=row[4],
        model_a=row[5],
        model_b=row[6],
        messages_a=json.loads(row[7]),
        messages_b=json.loads(row[8]),
        doc_ids=json.loads(row[9]),
        sampling=json.loads(row[10]),
        created_at=row[11],
        answer_a=row[12],
        answer_b=row[13],
        finished_at=row[14],
        vote=row[15],
        voted_at=row[16],
        documents=tuple(StoredDocument(**d) for d in json.loads(row[17])),
        client_hash=row[18],
        version_a=row[19],
        version_b=row[20],
    )


class SQLVoteStore:
    """The rules of the vote store, written once for every SQL backend.

    SQL here uses `?` placeholders and `{lock}` after a SELECT whose rows a write decides on.
    A backend sets `real_type` and `integrity_errors`, and implements `_transaction` (one
    transaction, committed when the block ends, rolled back on any exception), `_reading` (a
    connection for reads), `_translate` (placeholders), `lock_clause` (" FOR UPDATE" where
    row locks exist; "" where a write transaction already excludes every other writer) and
    `_lock_voters` (serialise writes of the same voters where writers run concurrently).
    Connections only need `execute(sql, params)` returning a cursor with fetchone/fetchall.
    `clock` gives the unix time stamps of battles and votes (and the rate-limit windows).
    """

    real_type = "REAL"
    lock_clause = ""
    integrity_errors: tuple[type[BaseException], ...] = ()
    clock: Callable[[], float] = staticmethod(time.time)

    # ------------------------------------------------------------------------------- backend
    def _transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _translate(self, sql: str) -> str:
        return sql

    def _prepare_schema(self, conn) -> None:
        """Run first inside the schema transaction (e.g. a lock so concurrent starts queue)."""

    def _lock_voters(self, conn, keys: Sequence[str]) -> None:
        """Inside a write transaction: wait until no other transaction writes for these voters."""

    def describe(self) -> str:
        """Where the store is, for messages (never a password)."""
        raise NotImplementedError

    def _execute(self, conn, sql: str, params: Sequence = ()):
        return conn.execute(self._translate(sql.replace("{lock}", self.lock_clause)), tuple(params))

    def _fetch(self, sql: str, params: Sequence = ()) -> list:
        """All rows of one read query, on a reading connection."""
        with self._reading() as conn:
            return self._execute(conn, sql, params).fetchall()

    def _create_schema(self) -> None:
        """Create the schema, or migrate it to SCHEMA_VERSION, in one transaction."""
        with self._transaction() as conn:
            self._prepare_schema(conn)
            for statement in schema_statements(self.real_type):
                self._execute(conn, statement)
            versions = [r[0] for r in self._execute(conn, "SELECT version FROM schema_version").fetchall()]
            current = max(versions, default=0)
            if current > SCHEMA_VERSION:  # raising rolls the transaction back
                raise RuntimeError(
                    f"vote store {self.describe()} has schema version {current}, newer than this code "
                    f"({SCHEMA_VERSION}); upgrade Wayfarer"
                )
            if current == 0:
                self._execute(conn, "INSERT INTO schema_version (version) VALUES (?)", (1,))
                current = 1
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _statements(MIGRATIONS[version], self.real_type):
                    self._execute(conn, statement)
                self._execute(conn, "INSERT INTO schema_version (version) VALUES (?)", (version,))

    def schema_version(self) -> int:
        return max(r[0] for r in self._fetch("SELECT version FROM schema_version"))

    # ------------------------------------------------------------------------------- writes
    def create_battle(
        self,
        *,
        session: str,
        question: str,
        model_a: str,
        model_b: str,
        messages_a: Sequence[dict],
        messages_b: Sequence[dict],
        doc_ids: Sequence[str] = (),
        documents: Sequence = (),
        sampling: dict | None = None,
        conversation_id: str | None = None,
        turn: int = 0,
        client: str | None = None,
        version_a: int | None = None,
        version_b: int | None = None,
    ) -> str:
        """Record a battle. `version_a`/`version_b`: the adapter version each side runs (None:
        the base model or an unversioned adapter). `documents` are the retrieved documents both sides were shown
        (raft.Document, StoredDocument or dicts); `doc_ids` defaults to their ids. `client` is
        the salted hash of the client address (arena.sessions.hash_client), when known."""
        check_session_hash(session)
        if client is not None:
            check_session_hash(client)
        if not question or not question.strip():
            raise BattleError("a battle needs a question")
        if not model_a or not model_b or model_a == model_b:
            raise BattleError(f"a battle needs two different models, got {model_a!r} and {model_b!r}")
        stored_documents = [StoredDocument.of(d) for d in documents]
        if stored_documents and not doc_ids:
            doc_ids = [d.doc_id for d in stored_documents]
        elif stored_documents and list(doc_ids) != [d.doc_id for d in stored_documents]:
            raise BattleError("doc_ids and documents name different documents")
        battle_id = uuid.uuid4().hex
        conversation_id = conversation_id or battle_id
        with self._transaction() as conn:
            if turn > 0:
                previous = self._execute(
                    conn,
                    "SELECT model_a, model_b, session_hash FROM battles WHERE conversation_id = ? AND turn = ?{lock}",
                    (conversation_id, turn - 1),
                ).fetchone()
                if previous is None:
                    raise BattleError(f"conversation {conversation_id} has no turn {turn - 1} to follow")
                if tuple(previous) != (model_a, model_b, session):
                    raise BattleError("a follow-up turn must keep the same session and the same two models on the same sides")
            try:
                self._execute(
                    conn,
                    "INSERT INTO battles (battle_id, conversation_id, turn, session_hash, question, model_a, model_b, "
                    "messages_a, messages_b, doc_ids, sampling, created_at, documents, client_hash, version_a, version_b) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        battle_id,
                        conversation_id,
                        int(turn),
                        session,
                        question,
                        model_a,
                        model_b,
                        json.dumps(list(messages_a)),
                        json.dumps(list(messages_b)),
                        json.dumps(list(doc_ids)),
                        json.dumps(sampling or {}, sort_keys=True),
                        self.clock(),
                        json.dumps([dataclasses.asdict(d) for d in stored_documents]),
                        client,
                        None if version_a is None else int(version_a),
                        None if version_b is None else int(version_b),
                    ),
                )
            except self.integrity_errors as err:
                raise BattleError(f"conversation {conversation_id} already has a turn {turn}") from err
        return battle_id

    def finish_battle(self, battle_id: str, answer_a: str, answer_b: str) -> BattleRecord:
        """Store both complete answers; only a finished battle can be voted on."""
        with self._transaction() as conn:
            row = self._execute(
                conn, "SELECT answer_a, answer_b, finished_at FROM battles WHERE battle_id = ?{lock}", (battle_id,)
            ).fetchone()
            if row is None:
                raise BattleError(f"unknown battle {battle_id!r}")
            if row[2] is not None:
                if (row[0], row[1]) != (answer_a, answer_b):
                    raise BattleError(f"battle {battle_id} is already finished with other answers")
            else:
                self._execute(
                    conn,
                    "UPDATE battles SET answer_a = ?, answer_b = ?, finished_at = ? WHERE battle_id = ?",
                    (answer_a, answer_b, self.clock(), battle_id),
                )
        return self.battle(battle_id)

    def record_vote(
        self, battle_id: str, vote: str, session: str, *, client: str | None = None, limits: Sequence[RateLimit] = ()
    ) -> VoteReceipt:
        """Record one vote per battle. The identical vote again returns the stored one
        (`duplicate=True`); a different vote, an unfinished or unknown battle, or another
        session's battle raises VoteRejected and changes nothing.

        `limits` are checked for the session and, when given, the client address hash: a vote
        that would make either one exceed a limit raises VoteRejected(RATE_LIMITED) with
        `retry_after_s`. A duplicate is answered before the limits (a double click costs nothing).

        The battle row is read under the write lock (the row lock on PostgreSQL), so of two
        concurrent votes on one battle the second waits and then sees the first."""
        if vote not in VOTE_CHOICES:
            raise VoteRejected(VoteRejected.INVALID_VOTE, f"vote must be one of {', '.join(VOTE_CHOICES)}, got {vote!r}")
        check_session_hash(session)
        if client is not None:
            check_session_hash(client)
        voters = dict(zip(_VOTER_COLUMNS, (session, client)))
        with self._transaction() as conn:
            if limits:
                self._lock_voters(conn, sorted(v for v in voters.values() if v))
            battle = self._execute(
                conn,
                "SELECT session_hash, finished_at, model_a, model_b FROM battles WHERE battle_id = ?{lock}",
                (battle_id,),
            ).fetchone()
            if battle is None:
                raise VoteRejected(VoteRejected.UNKNOWN_BATTLE, f"there is no battle {battle_id!r}")
            owner, finished_at, model_a, model_b = battle
            if owner != session:
                raise VoteRejected(VoteRejected.WRONG_SESSION, "this battle belongs to another session")
            if finished_at is None:
                raise VoteRejected(VoteRejected.UNFINISHED, "both answers must be complete before voting")
            existing = self._execute(conn, "SELECT vote, voted_at FROM votes WHERE battle_id = ?", (battle_id,)).fetchone()
            if existing is not None:
                if existing[0] != vote:
                    raise VoteRejected(
                        VoteRejected.ALREADY_VOTED, f"this battle already has a vote ({existing[0]}); it cannot be changed"
                    )
                return VoteReceipt(battle_id, existing[0], existing[1], model_a, model_b, duplicate=True)
            voted_at = self.clock()
            self._check_limits(conn, voters, limits, voted_at)
            self._execute(
                conn,
                "INSERT INTO votes (battle_id, session_hash, vote, voted_at, client_hash) VALUES (?,?,?,?,?)",
                (battle_id, session, vote, voted_at, client),
            )
        return VoteReceipt(battle_id, vote, voted_at, model_a, model_b, duplicate=False)

    def _check_limits(self, conn, voters: dict, limits: Sequence[RateLimit], now: float) -> None:
        """Raise RATE_LIMITED when a voter already has `max_votes` votes in the last `window_s`."""
        for column, key in voters.items():
            if key is None:
                continue
            for limit in limits:
                recent = self._execute(
                    conn,
                    f"SELECT voted_at FROM votes WHERE {column} = ? AND voted_at > ? ORDER BY voted_at DESC LIMIT ?",
                    (key, now - limit.window_s, int(limit.max_votes)),
                ).fetchall()
                if len(recent) >= limit.max_votes:
                    # The vote is admitted once the oldest of those leaves the window.
                    retry = max(0.0, recent[-1][0] + limit.window_s - now)
                    who = "this session" if column == "session_hash" else "your network address"
                    raise VoteRejected(
                        VoteRejected.RATE_LIMITED,
                        f"too many votes from {who}: at most {limit.max_votes} per {_window_words(limit.window_s)}; "
                        f"try again in {retry:.0f} s",
                        retry_after_s=retry,
                    )

    # ------------------------------------------------------------------------------- reads
    def _select_battles(self, where: str = "", params: tuple = ()) -> list[BattleRecord]:
        rows = self._fetch(
            f"SELECT {_BATTLE_COLUMNS} FROM battles b LEFT JOIN votes v ON v.battle_id = b.battle_id "
            f"{where} ORDER BY b.created_at, b.turn",
            params,
        )
        return [_battle_from_row(row) for row in rows]

    def battle(self, battle_id: str) -> BattleRecord | None:
        found = self._select_battles("WHERE b.battle_id = ?", (battle_id,))
        return found[0] if found else None

    def conversation(self, conversation_id: str) -> list[BattleRecord]:
        return sorted(self._select_battles("WHERE b.conversation_id = ?", (conversation_id,)), key=lambda b: b.turn)

    def battles(self, *, voted_only: bool = False) -> list[BattleRecord]:
        return self._select_battles("WHERE v.vote IS NOT NULL" if voted_only else "")

    def votes(self) -> list[VoteRow]:
        rows = self._fetch(
            "SELECT v.battle_id, v.session_hash, b.model_a, b.model_b, v.vote, v.voted_at, b.turn, v.client_hash, "
            "b.version_a, b.version_b FROM votes v JOIN battles b ON b.battle_id = v.battle_id ORDER BY v.voted_at, v.battle_id"
        )
        return [VoteRow(*row) for row in rows]

    # ------------------------------------------------------------------------------- chat feedback
    def record_chat_feedback(
        self, *, session: str, model: str, prompt: Sequence[dict], completion: str, liked: bool, message_index: int
    ) -> str:
        """Store a 👍 (liked=True) or 👎 on a chat answer; the same session clicking again on the
        same answer replaces its earlier click. Returns the feedback id."""
        check_session_hash(session)
        if not isinstance(liked, bool):
            raise ValueError(f"liked must be True or False, got {liked!r}")
        prompt_json = json.dumps([{"role": m["role"], "content": m["content"]} for m in prompt])
        key = json.dumps([session, int(message_index), prompt_json, completion])
        feedback_id = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
        with self._transaction() as conn:
            self._execute(
                conn,
                "INSERT INTO chat_feedback (feedback_id, session_hash, model, prompt, completion, liked, created_at) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT (feedback_id) DO UPDATE SET liked = excluded.liked, "
                "created_at = excluded.created_at",
                (feedback_id, session, str(model), prompt_json, str(completion), int(liked), self.clock()),
            )
        return feedback_id

    def chat_feedback(self) -> list[ChatFeedbackRow]:
        rows = self._fetch(
            "SELECT feedback_id, session_hash, model, prompt, completion, liked, created_at "
            "FROM chat_feedback ORDER BY created_at, feedback_id"
        )
        return [ChatFeedbackRow(r[0], r[1], r[2], json.loads(r[3]), r[4], bool(r[5]), r[6]) for r in rows]

    def session_salt(self, env_var: str) -> str:
        raise NotImplementedError

    def hash_session(self, session_id: str, env_var: str) -> str:
        # The salt is fixed once created; looked up once per store, not per 👍/👎 (on PostgreSQL
        # session_salt is a write transaction), as the chat tab did before it asked the store.
        salts = self.__dict__.setdefault("_session_salts", {})
        if env_var not in salts:
            salts[env_var] = self.session_salt(env_var)
        return hash_session(salts[env_var], session_id)

    def close(self) -> None:
        """Release what the backend keeps open between calls."""


def _window_words(seconds: float) -> str:
    for size, word in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds == size:
            return word
    return f"{seconds:g} s"
