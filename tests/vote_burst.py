"""A burst of arena votes on the configured vote store, for the kill -9 test.

    python -m tests.vote_burst VOTES_PATH [COUNT]

The store is the one `open_vote_store` opens from the settings, with paths.votes = VOTES_PATH:
SQLite there by default; PostgreSQL with WAYFARER__ARENA__VOTE_STORE=postgres and the DSN in
WAYFARER_VOTES_DSN (VOTES_PATH then only names the burst's session).

Creates a finished battle and votes on it, COUNT times (0 = until killed). A battle id is
printed (and flushed) only after `record_vote` returned, so every line on stdout is a vote the
store acknowledged: the test kills this process with SIGKILL at a random moment and then checks
that every printed vote is in the store exactly once.
"""

from __future__ import annotations

import hashlib
import itertools
import sys

from arena.store import VOTE_CHOICES, open_vote_store
from settings import load_settings


def main(argv: list[str]) -> int:
    path = argv[0]
    count = int(argv[1]) if len(argv) > 1 else 0
    store = open_vote_store(load_settings(overrides={"paths": {"votes": path}}))
    session = hashlib.sha256(f"burst:{path}".encode()).hexdigest()
    numbers = range(count) if count else itertools.count()
    print("ready", flush=True)
    for number in numbers:
        question = f"burst question {number}"
        messages = [{"role": "user", "content": question}]
        battle_id = store.create_battle(
            session=session, question=question, model_a="base", model_b="qlora", messages_a=messages, messages_b=messages
        )
        store.finish_battle(battle_id, f"answer a {number}", f"answer b {number}")
        vote = VOTE_CHOICES[number % len(VOTE_CHOICES)]
        store.record_vote(battle_id, vote, session)
        sys.stdout.write(f"{battle_id} {vote}\n")
        sys.stdout.flush()
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
