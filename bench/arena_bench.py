"""Arena benchmark: the leaderboard at scale and the vote store's write rate, one line per figure.

    .venv/bin/python bench/arena_bench.py [--votes 100000] [--bootstraps 100]

1. The leaderboard (Bradley-Terry with bootstrap intervals, online Elo, win-rate matrix) on
   `--votes` simulated votes between five models with known ratings, and how far the fitted
   ratings land from the true ones.
2. Votes recorded per second in the configured vote store's SQLite backend (a temporary file,
   synchronous=FULL: every acknowledged vote is on disk), one battle + one vote per iteration.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arena.leaderboard import compute_leaderboard, simulate_votes  # noqa: E402
from arena.sessions import hash_session  # noqa: E402
from arena.store import SQLiteVoteStore  # noqa: E402

TRUE_RATINGS = {"base": 1000.0, "qlora": 1050.0, "raft": 1150.0, "rlhf": 1250.0, "other": 900.0}


def line(name: str, value: float, unit: str, note: str = "") -> None:
    print(f"{name:<44} {value:>10.2f} {unit:<8} {note}".rstrip(), flush=True)


def bench_leaderboard(votes: int, bootstraps: int) -> None:
    rows = simulate_votes(TRUE_RATINGS, votes, sessions=5000)
    start = time.perf_counter()
    board = compute_leaderboard(rows, bootstrap_rounds=bootstraps, abuse_votes=10**9)
    seconds = time.perf_counter() - start
    line(f"leaderboard, {votes:,} votes, {bootstraps} bootstraps", seconds, "s")
    fitted = {row.model: row.rating for row in board.rows}
    shift = np.mean([fitted[m] - TRUE_RATINGS[m] for m in TRUE_RATINGS])  # ratings are relative
    error = max(abs(fitted[m] - shift - TRUE_RATINGS[m]) for m in TRUE_RATINGS)
    line("leaderboard, worst rating error", error, "points", "fitted vs true, after centring")


def bench_vote_writes(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteVoteStore(Path(tmp) / "votes.sqlite3")
        session = hash_session("bench", "voter")
        start = time.perf_counter()
        for i in range(count):
            battle = store.create_battle(
                session=session, question=f"q{i}", model_a="raft", model_b="base",
                messages_a=[{"role": "user", "content": "q"}], messages_b=[{"role": "user", "content": "q"}],
            )
            store.finish_battle(battle, "answer a", "answer b")
            store.record_vote(battle, "model_a", session)
        seconds = time.perf_counter() - start
        store.close()
    line("vote store (SQLite), battles voted per second", count / seconds, "votes/s", "create + finish + vote, durable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=100_000)
    parser.add_argument("--bootstraps", type=int, default=100)
    parser.add_argument("--writes", type=int, default=300)
    args = parser.parse_args()
    bench_leaderboard(args.votes, args.bootstraps)
    bench_vote_writes(args.writes)


if __name__ == "__main__":
    main()
