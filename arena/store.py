"""The durable vote store: one row per battle (one turn of a side-by-side conversation), one per vote.

Two backends share one schema and every rule below (validation, rejection reasons, one short
transaction per write, the identical vote twice counted once) and differ only in connections and
SQL dialect:

    arena.store_sqlite    SQLiteVoteStore    one file at paths.votes (the default): WAL, synchronous=FULL
    arena.store_postgres  PostgresVoteStore  a PostgreSQL database (arena.vote_store: postgres)

Everything above the store talks to the `VoteStore` protocol; `open_vote_store(settings)` returns
the configured backend. Both backend classes are importable from here as before.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from arena.sessions import check_session_hash

VOTE_CHOICES = ("model_a", "model_b", "tie", "both_bad")
SCHEMA_VERSION = 1


class VoteRejected(ValueError):
    """A vote that cannot be recorded; `reason` is one of the class constants."""

    UNKNOWN_BATTLE = "unknown_battle"
    UNFINISHED = "unfinished"
    ALREADY_VOTED = "already_voted"
    WRONG_SESSION = "wrong_session"
    INVALID_VOTE = "invalid_vote"

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class BattleError(ValueError):
    """A battle cannot be created or finished as asked (unknown id, bad fields, finished twice)."""


@dataclasses.dataclass(frozen=True)
class BattleRecord:
    battle_id: str
    conversation_id: str  # shared by all turns of one multi-turn round
    turn: int  # 0 for the first question of a round
    session_hash: str
    question: str
    model_a: str  # the model shown as "Model A"
    model_b: str  # the model shown as "Model B"
    messages_a: list  # exactly what model A was sent (no system prompt)
    messages_b: list
    doc_ids: list  # retrieved documents both sides saw
    sampling: dict
    created_at: float  # unix seconds
    answer_a: str | None = None
    answer_b: str | None = None
    finished_at: float | None = None
    vote: str | None = None
    voted_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclasses.dataclass(frozen=True)
class VoteReceipt:
    """What `record_vote` returns; `duplicate` is True when the identical vote was already stored."""

    battle_id: str
    vote: str
    voted_at: float
    model_a: str
    model_b: str
    duplicate: bool


@dataclasses.dataclass(frozen=True)
class VoteRow:
    """One vote with what the leaderboard needs."""

    battle_id: str
    session_hash: str
    model_a: str
    model_b: str
    vote: str
    voted_at: float
    turn: int


class VoteStore(Protocol):
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
        sampling: dict | None = None,
        conversation_id: str | None = None,
        turn: int = 0,
    ) -> str: ...

    def finish_battle(self, battle_id: str, answer_a: str, answer_b: str) -> BattleRecord: ...

    def record_vote(self, battle_id: str, vote: str, session: str) -> VoteReceipt: ...

    def battle(self, battle_id: str) -> BattleRecord | None: ...

    def conversation(self, conversation_id: str) -> list[BattleRecord]: ...

    def battles(self, *, voted_only: bool = False) -> list[BattleRecord]: ...

    def votes(self) -> list[VoteRow]: ...

    def session_salt(self, env_var: str) -> str:
        """The salt for session hashes: the environment variable `env_var` when set, else one
        the store keeps (created once; every process on the same store gets the same one)."""
        ...

    def close(self) -> None: ...


# The one schema of every backend. {real} is the backend's 8-byte float type; JSON columns are
# TEXT holding json.dumps output, so every backend reads back exactly the records it was given.
_SCHEMA = """
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

_BATTLE_COLUMNS = (
    "b.battle_id, b.conversation_id, b.turn, b.session_hash, b.question, b.model_a, b.model_b, "
    "b.messages_a, b.messages_b, b.doc_ids, b.sampling, b.created_at, b.answer_a, b.answer_b, "
    "b.finished_at, v.vote, v.voted_at"
)


def schema_statements(real_type: str) -> list[str]:
    """The schema as single statements, with `real_type` for the float columns."""
    return [s.strip() for s in _SCHEMA.format(real=real_type).split(";") if s.strip()]


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
    )


class SQLVoteStore:
    """The rules of the vote store, written once for every SQL backend.

    SQL here uses `?` placeholders and `{lock}` after a SELECT whose rows a write decides on.
    A backend sets `real_type` and `integrity_errors`, and implements `_transaction` (one
    transaction, committed when the block ends, rolled back on any exception), `_reading` (a
    connection for reads), `_translate` (placeholders) and `lock_clause` (" FOR UPDATE" where
    row locks exist; "" where a write transaction already excludes every other writer).
    Connections only need `execute(sql, params)` returning a cursor with fetchone/fetchall.
    """

    real_type = "REAL"
    lock_clause = ""
    integrity_errors: tuple[type[BaseException], ...] = ()

    # ------------------------------------------------------------------------------- backend
    def _transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _translate(self, sql: str) -> str:
        return sql

    def _prepare_schema(self, conn) -> None:
        """Run first inside the schema transaction (e.g. a lock so concurrent starts queue)."""

    def describe(self) -> str:
        """Where the store is, for messages (never a password)."""
        raise NotImplementedError

    def _execute(self, conn, sql: str, params: Sequence = ()):
        return conn.execute(self._translate(sql.replace("{lock}", self.lock_clause)), tuple(params))

    def _create_schema(self) -> None:
        with self._transaction() as conn:
            self._prepare_schema(conn)
            for statement in schema_statements(self.real_type):
                self._execute(conn, statement)
            versions = [r[0] for r in self._execute(conn, "SELECT version FROM schema_version").fetchall()]
            if not versions:
                self._execute(conn, "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif max(versions) > SCHEMA_VERSION:  # raising rolls the transaction back
                raise RuntimeError(
                    f"vote store {self.describe()} has schema version {max(versions)}, newer than this code "
                    f"({SCHEMA_VERSION}); upgrade Wayfarer"
                )

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
        sampling: dict | None = None,
        conversation_id: str | None = None,
        turn: int = 0,
    ) -> str:
        check_session_hash(session)
        if not question or not question.strip():
            raise BattleError("a battle needs a question")
        if not model_a or not model_b or model_a == model_b:
            raise BattleError(f"a battle needs two different models, got {model_a!r} and {model_b!r}")
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
                    "messages_a, messages_b, doc_ids, sampling, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
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
                        time.time(),
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
                    (answer_a, answer_b, time.time(), battle_id),
                )
        return self.battle(battle_id)

    def record_vote(self, battle_id: str, vote: str, session: str) -> VoteReceipt:
        """Record one vote per battle. The identical vote again returns the stored one
        (`duplicate=True`); a different vote, an unfinished or unknown battle, or another
        session's battle raises VoteRejected and changes nothing.

        The battle row is read under the write lock (the row lock on PostgreSQL), so of two
        concurrent votes on one battle the second waits and then sees the first."""
        if vote not in VOTE_CHOICES:
            raise VoteRejected(VoteRejected.INVALID_VOTE, f"vote must be one of {', '.join(VOTE_CHOICES)}, got {vote!r}")
        check_session_hash(session)
        with self._transaction() as conn:
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
            voted_at = time.time()
            self._execute(
                conn,
                "INSERT INTO votes (battle_id, session_hash, vote, voted_at) VALUES (?,?,?,?)",
                (battle_id, session, vote, voted_at),
            )
        return VoteReceipt(battle_id, vote, voted_at, model_a, model_b, duplicate=False)

    # ------------------------------------------------------------------------------- reads
    def _select_battles(self, where: str = "", params: tuple = ()) -> list[BattleRecord]:
        with self._reading() as conn:
            rows = self._execute(
                conn,
                f"SELECT {_BATTLE_COLUMNS} FROM battles b LEFT JOIN votes v ON v.battle_id = b.battle_id "
                f"{where} ORDER BY b.created_at, b.turn",
                params,
            ).fetchall()
        return [_battle_from_row(row) for row in rows]

    def battle(self, battle_id: str) -> BattleRecord | None:
        found = self._select_battles("WHERE b.battle_id = ?", (battle_id,))
        return found[0] if found else None

    def conversation(self, conversation_id: str) -> list[BattleRecord]:
        return sorted(self._select_battles("WHERE b.conversation_id = ?", (conversation_id,)), key=lambda b: b.turn)

    def battles(self, *, voted_only: bool = False) -> list[BattleRecord]:
        return self._select_battles("WHERE v.vote IS NOT NULL" if voted_only else "")

    def votes(self) -> list[VoteRow]:
        with self._reading() as conn:
            rows = self._execute(
                conn,
                "SELECT v.battle_id, v.session_hash, b.model_a, b.model_b, v.vote, v.voted_at, b.turn "
                "FROM votes v JOIN battles b ON b.battle_id = v.battle_id ORDER BY v.voted_at, v.battle_id",
            ).fetchall()
        return [VoteRow(*row) for row in rows]

    def session_salt(self, env_var: str) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend keeps open between calls."""


VOTE_STORE_BACKENDS = {
    "sqlite": ("arena.store_sqlite", "SQLiteVoteStore"),
    "postgres": ("arena.store_postgres", "PostgresVoteStore"),
}


def __getattr__(name: str):
    # `from arena.store import SQLiteVoteStore` keeps working; a backend module (and its driver,
    # psycopg for PostgreSQL) is imported only when it is used.
    for module, class_name in VOTE_STORE_BACKENDS.values():
        if name == class_name:
            return getattr(importlib.import_module(module), class_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_vote_store(settings) -> VoteStore:
    """The configured vote store: arena.vote_store `sqlite` (the file at paths.votes) or
    `postgres` (the DSN is read from the environment variable named by arena.postgres_dsn_env)."""
    from arena.config import ArenaConfig

    config = ArenaConfig.from_settings(settings)
    if config.vote_store == "postgres":
        dsn = os.environ.get(config.postgres_dsn_env, "").strip()
        if not dsn:
            raise RuntimeError(
                f"arena.vote_store is postgres but the environment variable {config.postgres_dsn_env} "
                "(arena.postgres_dsn_env) is not set: set it to the database's DSN, e.g. "
                "postgresql://user:password@host:5432/wayfarer"
            )
        from arena.store_postgres import PostgresVoteStore

        return PostgresVoteStore(dsn)
    from arena.store_sqlite import SQLiteVoteStore

    return SQLiteVoteStore(settings.path("votes"))
