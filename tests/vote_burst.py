"""A burst of arena votes on the real SQLite store, for the kill -9 test.

    python -m tests.vote_burst VOTES_PATH [COUNT]

Creates a finished battle and votes on it, COUNT times (0 = until killed). A battle id is
printed (and flushed) only after `record_vote` returned, so every line on stdout is a vote the
store acknowledged: the test kills this process with SIGKILL at a random moment and then checks
that every printed vote is in the store exactly once.
"""

from __future__ import annotations

import hashlib
import itertools
import sys

from arena.store import VOTE_CHOICES, SQLiteVoteStore


def main(argv: list[str]) -> int:
    path = argv[0]
    count = int(argv[1]) if len(argv) > 1 else 0
    store = SQLiteVoteStore(path)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
