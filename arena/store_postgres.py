"""The vote store on PostgreSQL (arena.vote_store: postgres; the rules live in arena.store_sql).

Same tables and columns as the SQLite store, with DOUBLE PRECISION for the timestamps and the
JSON columns kept as TEXT, so records read back identical. Each write is one transaction at READ
COMMITTED; the battle row a write decides on is read with SELECT ... FOR UPDATE, so two
concurrent votes on one battle queue on that row and the second sees the first (counted once).
The voters of a rate-limited vote are serialised with advisory transaction locks (keyed by a
hash of the session/client hash), so two app processes never both admit a voter's last vote.

Connections come from psycopg_pool's ConnectionPool: a thread takes one for a call and gives it
back; the pool drops connections that broke or were left inside a transaction, and checks a
connection before handing it out, so a server restart costs no failed vote. Schema creation and
migrations take an advisory lock, so processes starting together against one database queue.

The session salt, unless set in the environment, is kept in the database (table `meta`), so
every app process using the same database hashes sessions and client addresses the same way.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from arena.sessions import session_salt_from_env
from arena.store_sql import SQLVoteStore

# pg_advisory_xact_lock key held while creating the schema (any constant unique to Wayfarer).
_SCHEMA_LOCK_KEY = 0x5761_7966_6172_6572 & 0x7FFF_FFFF_FFFF_FFFF  # "Wayfarer"
_SALT_KEY = "session_salt"


class PostgresVoteStore(SQLVoteStore):
    """`VoteStore` on a PostgreSQL database given by a libpq DSN (a URI or key=value string).
    Safe to share between threads; `close()` closes the pool."""

    real_type = "DOUBLE PRECISION"
    lock_clause = " FOR UPDATE"
    integrity_errors = (psycopg.IntegrityError,)

    def __init__(
        self,
        dsn: str,
        *,
        max_connections: int = 8,
        connect_timeout_s: int = 10,
        clock: Callable[[], float] = time.time,
    ):
        if not dsn or not dsn.strip():
            raise ValueError("PostgresVoteStore needs a DSN, e.g. postgresql://user:password@host:5432/wayfarer")
        self._dsn = dsn
        self.clock = clock
        self._pool = ConnectionPool(
            dsn,
            min_size=0,  # connect on demand: a store that is opened and closed at once costs no idle connections
            max_size=max_connections,
            # autocommit: reads are single statements; writes open an explicit transaction.
            kwargs={"autocommit": True, "connect_timeout": connect_timeout_s},
            check=ConnectionPool.check_connection,
            timeout=connect_timeout_s + 20.0,  # waiting for a free connection when all are busy
            name="wayfarer-votes",
            open=True,
        )
        try:
            self._create_schema()
        except BaseException:
            self._pool.close()
            raise

    def describe(self) -> str:
        try:
            info = conninfo_to_dict(self._dsn)
        except psycopg.ProgrammingError:
            return "PostgreSQL (unparsable DSN)"
        where = f"{info.get('host') or 'local socket'}:{info.get('port') or 5432}"
        return f"PostgreSQL database {info.get('dbname') or info.get('user') or '(default)'} at {where}"

    # ------------------------------------------------------------------------------- connections
    @contextmanager
    def _connection(self):
        if self._pool.closed:
            raise RuntimeError(f"vote store {self.describe()} is closed")
        with self._pool.connection() as conn:
            yield conn

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

    def _lock_voters(self, conn, keys: Sequence[str]) -> None:
        for key in keys:  # sorted by the caller: two transactions always lock in the same order
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"wayfarer-voter:{key}",))

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
        self._pool.close()
