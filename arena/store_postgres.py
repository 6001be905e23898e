"""The vote store on PostgreSQL (arena.vote_store: postgres; the rules live in arena.store).

Same tables and columns as the SQLite store, with DOUBLE PRECISION for the timestamps and the
JSON columns kept as TEXT, so records read back identical. Each write is one transaction at READ
COMMITTED; the battle row a write decides on is read with SELECT ... FOR UPDATE, so two
concurrent votes on one battle queue on that row and the second sees the first (counted once).
Connections come from a small lock-protected pool: a thread takes one for a call and gives it
back, so no connection is used by two threads at once. Schema creation takes an advisory lock,
so processes starting together against an empty database do not race.

The session salt, unless set in the environment, is kept in the database (table `meta`), so
every app process using the same database hashes sessions the same way.
"""

from __future__ import annotations

import secrets
import threading
from contextlib import contextmanager

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from arena.sessions import session_salt_from_env
from arena.store import SQLVoteStore

# pg_advisory_xact_lock key held while creating the schema (any constant unique to Wayfarer).
_SCHEMA_LOCK_KEY = 0x5761_7966_6172_6572 & 0x7FFF_FFFF_FFFF_FFFF  # "Wayfarer"
_SALT_KEY = "session_salt"


class PostgresVoteStore(SQLVoteStore):
    """`VoteStore` on a PostgreSQL database given by a libpq DSN (a URI or key=value string).
    Safe to share between threads; `close()` closes the pooled connections."""

    real_type = "DOUBLE PRECISION"
    lock_clause = " FOR UPDATE"
    integrity_errors = (psycopg.IntegrityError,)

    def __init__(self, dsn: str, *, max_idle: int = 8, connect_timeout_s: int = 10):
        if not dsn or not dsn.strip():
            raise ValueError("PostgresVoteStore needs a DSN, e.g. postgresql://user:password@host:5432/wayfarer")
        self._dsn = dsn
        self._max_idle = max_idle
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._create_schema()

    def describe(self) -> str:
        try:
            info = conninfo_to_dict(self._dsn)
        except psycopg.ProgrammingError:
            return "PostgreSQL (unparsable DSN)"
        where = f"{info.get('host') or 'local socket'}:{info.get('port') or 5432}"
        return f"PostgreSQL database {info.get('dbname') or info.get('user') or '(default)'} at {where}"

    # ------------------------------------------------------------------------------- connections
    def _connect(self) -> psycopg.Connection:
        # autocommit: reads are single statements; writes open an explicit transaction.
        return psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._connect_timeout_s)

    @contextmanager
    def _connection(self):
        if self._closed:
            raise RuntimeError(f"vote store {self.describe()} is closed")
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = self._connect()
        try:
            yield conn
        finally:
            # A broken connection (server restart, network) or one left inside a transaction is
            # dropped, never handed to the next caller.
            reusable = not conn.closed and not conn.broken and conn.info.transaction_status == pq.TransactionStatus.IDLE
            with self._lock:
                if reusable and not self._closed and len(self._idle) < self._max_idle:
                    self._idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    @contextmanager
    def _transaction(self):
        with self._connection() as conn:
            with conn.transaction():  # COMMIT when the block ends, ROLLBACK on any exception
                yield conn

    def _reading(self):
        return self._connection()

    def _translate(self, sql: str) -> str:
        return sql.replace("?", "%s")  # no statement of the store has a literal ? or %

    def _prepare_schema(self, conn) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    # ------------------------------------------------------------------------------- salt
    def session_salt(self, env_var: str) -> str:
        from_env = session_salt_from_env(env_var)
        if from_env:
            return from_env
        with self._transaction() as conn:
            # Concurrent first starts: one INSERT wins, the others wait for it and do nothing;
            # the SELECT (a new snapshot at READ COMMITTED) then sees the winner's salt.
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                (_SALT_KEY, secrets.token_hex(32)),
            )
            return conn.execute("SELECT value FROM meta WHERE key = %s", (_SALT_KEY,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
