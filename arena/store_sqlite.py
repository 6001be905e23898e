"""The vote store on one SQLite file (the default backend; the rules live in arena.store_sql).

WAL so readers never block the writer, synchronous=FULL so a vote that was acknowledged survives
a power cut, one short IMMEDIATE transaction per write (it takes the write lock at once, so the
reads a write decides on, rate-limit counts included, cannot change under it), and a busy
timeout so concurrent voters queue instead of failing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from arena.sessions import load_session_salt
from arena.store_sql import SQLVoteStore


class SQLiteVoteStore(SQLVoteStore):
    """`VoteStore` on one SQLite file. Safe to share between threads: each call opens its own
    connection (cheap for SQLite), so no connection is ever used by two threads."""

    real_type = "REAL"
    lock_clause = ""  # BEGIN IMMEDIATE already excludes every other writer (and _lock_voters is not needed)
    integrity_errors = (sqlite3.IntegrityError,)

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self.clock = clock
        conn = self._connect()
        try:
            # WAL is a property of the file: set once, every later connection uses it.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        finally:
            conn.close()
        if mode.lower() != "wal":
            raise RuntimeError(f"vote store {self.path}: could not enable WAL (got {mode})")
        self._create_schema()

    def describe(self) -> str:
        return str(self.path)

    @property
    def salt_file(self) -> Path:
        """Where the session salt lives when it is not given in the environment."""
        return self.path.with_name(self.path.name + ".salt")

    def session_salt(self, env_var: str) -> str:
        return load_session_salt(env_var, self.salt_file)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per write.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def _transaction(self):
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlocks
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def _reading(self):
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    def close(self) -> None:
        """Nothing stays open between calls; kept for the protocol."""
