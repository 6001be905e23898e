"""`python -m arena export | leaderboard` on the configured vote store: with
`arena.vote_store: postgres` they read the real PostgreSQL server (tests/postgres_server.py),
not a SQLite file that is not there."""

from __future__ import annotations

import os
import subprocess
import sys

from arena.sessions import hash_session
from arena.store import PostgresVoteStore
from tests.conftest import REPO


def fill(store) -> None:
    """Three voted battles (raft beats base twice, one tie) and one left unvoted."""

    def battle(who, question, vote, answers):
        messages = [{"role": "user", "content": f"DOCS + {question}"}]
        battle_id = store.create_battle(
            session=hash_session("t", who), question=question, model_a="raft", model_b="base",
            messages_a=messages, messages_b=messages, doc_ids=["t1-0"],
        )
        store.finish_battle(battle_id, *answers)
        if vote:
            store.record_vote(battle_id, vote, hash_session("t", who))

    battle("u1", "Where to eat in Lisbon?", "model_a", ("Try Alfama tascas.", "Eat anywhere."))
    battle("u2", "Best time for Iceland?", "model_a", ("Summer for hiking, winter for auroras.", "Winter only."))
    battle("u3", "Is Tokyo expensive?", "tie", ("It depends.", "Yes."))
    battle("u4", "Unvoted question?", None, ("A.", "B."))


def arena_cli(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arena", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def postgres_env(home, dsn: str | None) -> dict:
    env = {**os.environ, "WAYFARER_PROFILE": "local", "WAYFARER__PATHS__HOME": str(home),
           "WAYFARER__ARENA__VOTE_STORE": "postgres"}
    env.pop("WAYFARER_VOTES_DSN", None)
    if dsn is not None:
        env["WAYFARER_VOTES_DSN"] = dsn  # arena.postgres_dsn_env
    return env


def test_export_and_leaderboard_read_the_postgres_vote_store(postgres_dsn, tmp_path):
    store = PostgresVoteStore(postgres_dsn)
    fill(store)
    store.close()
    env = postgres_env(tmp_path, postgres_dsn)

    export = arena_cli("export", env=env)
    assert export.returncode == 0, export.stderr
    assert "preference pairs: 2" in export.stdout and "1 ties" in export.stdout
    assert (tmp_path / "data" / "datasets" / "arena_preference" / "dataset_dict.json").is_file()

    board = arena_cli("leaderboard", "--rounds", "20", env=env)
    assert board.returncode == 0, board.stderr
    lines = board.stdout.splitlines()
    assert lines[0].split()[:2] == ["rank", "model"]
    assert [line.split()[1] for line in lines[1:3]] == ["raft", "base"]  # raft won both decided battles
    assert "3 votes used" in board.stdout
    assert (tmp_path / "leaderboard" / "ratings.png").is_file()
    assert not (tmp_path / "votes.sqlite3").exists()  # no SQLite file was looked for or made


def test_postgres_without_its_dsn_variable_is_a_clear_error(tmp_path):
    for command in ("export", "leaderboard"):
        done = arena_cli(command, env=postgres_env(tmp_path, None))
        assert done.returncode == 2, done.stderr
        assert "WAYFARER_VOTES_DSN" in done.stderr and "Traceback" not in done.stderr
        assert "nobody has voted" not in done.stderr
