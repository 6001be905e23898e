"""The retraining loop as its own process, for tests/test_retrain_loop.py (the kill -9 test).

    python -m tests.retrain_worker HOME OVERRIDES_JSON

Runs `retraining.run_once(force=True)` on the test settings of HOME (tests.test_retrain_loop.
loop_settings) with OVERRIDES_JSON merged in; the vote store's DSN, for PostgreSQL, comes from
the environment as in the app.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    from tests.test_retrain_loop import loop_settings
    from retraining import run_once

    settings = loop_settings(argv[0], **json.loads(argv[1]))
    run_once(settings, force=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
