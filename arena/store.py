"""The durable vote store: open the configured backend, and the store's public names in one place.

    arena.records         BattleRecord, VoteRow, VoteReceipt, VoteRejected, RateLimit, VoteStore (protocol)
    arena.store_sql       SQLVoteStore: the rules and the versioned schema, once for every backend
    arena.store_sqlite    SQLiteVoteStore    one file at paths.votes (the default): WAL, synchronous=FULL
    arena.store_postgres  PostgresVoteStore  a PostgreSQL database (arena.vote_store: postgres)
    arena.store           open_vote_store(settings), and the names above re-exported for callers

Dependencies run one way: records <- store_sql <- store_sqlite / store_postgres <- store. No
backend imports this module, so this module can import both (psycopg is a pinned requirement).
"""

from __future__ import annotations

import os

from arena.config import ArenaConfig
from arena.records import (
    VOTE_CHOICES,
    BattleError,
    BattleRecord,
    RateLimit,
    StoredDocument,
    VoteReceipt,
    VoteRejected,
    VoteRow,
    VoteStore,
)
from arena.store_postgres import PostgresVoteStore
from arena.store_sql import SCHEMA_VERSION, SQLVoteStore
from arena.store_sqlite import SQLiteVoteStore

__all__ = [
    "VOTE_CHOICES",
    "SCHEMA_VERSION",
    "BattleError",
    "BattleRecord",
    "PostgresVoteStore",
    "RateLimit",
    "SQLVoteStore",
    "SQLiteVoteStore",
    "StoredDocument",
    "VoteReceipt",
    "VoteRejected",
    "VoteRow",
    "VoteStore",
    "open_vote_store",
    "vote_store_exists",
]


def open_vote_store(settings) -> VoteStore:
    """The configured vote store: arena.vote_store `sqlite` (the file at paths.votes) or
    `postgres` (the DSN is read from the environment variable named by arena.postgres_dsn_env)."""
    config = ArenaConfig.from_settings(settings)
    if config.vote_store == "postgres":
        return PostgresVoteStore(_postgres_dsn(config))
    return SQLiteVoteStore(settings.path("votes"))


def vote_store_exists(settings) -> bool:
    """Whether there is a store to read: the SQLite file exists, or PostgreSQL is configured
    (a database is never `missing`; an empty one is opened and has no votes)."""
    config = ArenaConfig.from_settings(settings)
    return config.vote_store == "postgres" or settings.path("votes").exists()


def _postgres_dsn(config: ArenaConfig) -> str:
    dsn = os.environ.get(config.postgres_dsn_env, "").strip()
    if not dsn:
        raise RuntimeError(
            f"arena.vote_store is postgres but the environment variable {config.postgres_dsn_env} "
            "(arena.postgres_dsn_env) is not set: set it to the database's DSN, e.g. "
            "postgresql://user:password@host:5432/wayfarer"
        )
    return dsn
