"""`python -m retraining [--once] [--force]`: the loop as a worker sharing the vote store with
the app processes (SQLite file or PostgreSQL)."""

from __future__ import annotations

import argparse
import sys
import time

from retraining.config import RetrainConfig
from retraining.loop import run_once, status_markdown
from settings import ConfigError, Settings, apply_runtime, load_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="check (and run) once, then exit")
    parser.add_argument("--force", action="store_true", help="run even without arena.retrain.min_new_votes new votes")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from training.errors import TrainingError

    apply_runtime(settings)
    config = RetrainConfig.from_settings(settings)
    while True:
        try:
            status = run_once(settings, force=args.force)
        except (TrainingError, ConfigError) as err:  # logged in the status file by run_once
            print(f"loop: {err}", file=sys.stderr)
            if args.once:
                return 2
        else:
            print(status_markdown(status))
            if args.once:
                return 0
        time.sleep(config.poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retraining", description=__doc__.splitlines()[0])
    configure(parser)
    return run(parser.parse_args(argv), load_settings())


if __name__ == "__main__":
    sys.exit(main())
