"""python -m arena export [--push-to-hub OWNER/NAME [--private]] | leaderboard"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from settings import apply_runtime, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arena", description=__doc__)
    parser.add_argument("--profile", help="configuration profile (default: WAYFARER_PROFILE or the file's default)")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write the votes as preference (DPO) and negative (KTO) datasets")
    export.add_argument("--output", type=Path, help="datasets folder (default: paths.datasets)")
    export.add_argument(
        "--push-to-hub", metavar="REPO_ID",
        help="also push both datasets to this Hugging Face Hub dataset repository (token: the HF_TOKEN variable)",
    )
    export.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    board = commands.add_parser("leaderboard", help="print the ratings and write the plots")
    board.add_argument("--output", type=Path, help="plot folder (default: arena.leaderboard_dir)")
    board.add_argument("--rounds", type=int, help="bootstrap rounds (default: arena.bootstrap_rounds)")
    board.add_argument("--fold-versions", action="store_true", default=None,
                       help="rate every version of an adapter as one model (default: arena.fold_versions)")
    args = parser.parse_args(argv)
    if args.command == "export" and args.private and not args.push_to_hub:
        parser.error("--private only applies with --push-to-hub")

    settings = load_settings(profile=args.profile)
    apply_runtime(settings)
    if args.command == "export" and args.push_to_hub:
        from arena.export import hub_push_problems, valid_repo_id

        if not valid_repo_id(args.push_to_hub):
            parser.error(f"--push-to-hub {args.push_to_hub!r}: a Hub dataset id like owner/name")
        problems = hub_push_problems(settings)  # before any work, and without any network call
        if problems:
            for problem in problems:
                print(f"error: cannot push to the Hub: {problem}", file=sys.stderr)
            return 2
    from arena.config import ArenaConfig
    from arena.store import open_vote_store

    config = ArenaConfig.from_settings(settings)
    if config.vote_store == "sqlite" and not settings.path("votes").exists():
        # Opening the SQLite store would create an empty file; a database server is opened as it is.
        print(f"no vote store at {settings.path('votes')}: nobody has voted yet", file=sys.stderr)
        return 1
    try:
        store = open_vote_store(settings)
    except _store_errors(config) as err:  # unset DSN variable, server down, wrong credentials
        print(f"error: cannot open the vote store (arena.vote_store: {config.vote_store}): {err}", file=sys.stderr)
        return 2
    try:
        if args.command == "export":
            return _export(args, store, config, settings)
        return _leaderboard(args, store, config)
    finally:
        store.close()


def _store_errors(config) -> tuple[type[Exception], ...]:
    """What opening the configured store raises for a problem of the set-up, not of the code."""
    import sqlite3

    errors: tuple[type[Exception], ...] = (RuntimeError, ValueError, OSError, sqlite3.Error)
    if config.vote_store == "postgres":
        import psycopg

        errors += (psycopg.Error,)
    return errors


def _leaderboard(args, store, config) -> int:
    from arena.leaderboard import leaderboard_from_config, leaderboard_summary, write_plots

    overrides = {} if args.rounds is None else {"bootstrap_rounds": args.rounds}
    if args.fold_versions:
        overrides["fold_versions"] = True
    board_data = leaderboard_from_config(store.votes(), config, **overrides)
    print(board_data.format_table())
    print(f"\n{board_data.votes_used} votes used. {leaderboard_summary(board_data)}")
    ratings, heatmap = write_plots(board_data, args.output or Path(config.leaderboard_dir))
    print(f"plots: {ratings} {heatmap}")
    return 0


def _export(args, store, config, settings) -> int:
    import os

    from arena.export import HUB_TOKEN_ENV, HubPushError, hub_url, prepare_export, push_export, write_export

    prepared = prepare_export(store, config)
    report = write_export(prepared, args.output or settings.path("datasets"))
    print(report.summary())
    if not args.push_to_hub:
        return 0
    try:
        pushed = push_export(
            prepared, args.push_to_hub, token=os.environ[HUB_TOKEN_ENV].strip(), private=True if args.private else None
        )
    except HubPushError as err:
        print(f"error: {err}; the local export in {report.preference_dir.parent} is kept", file=sys.stderr)
        return 1
    visibility = " (private)" if args.private else ""
    print(f"pushed {', '.join(pushed)} to {hub_url(args.push_to_hub)}{visibility}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
