"""python -m arena export | leaderboard"""

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
    board = commands.add_parser("leaderboard", help="print the ratings and write the plots")
    board.add_argument("--output", type=Path, help="plot folder (default: arena.leaderboard_dir)")
    board.add_argument("--rounds", type=int, help="bootstrap rounds (default: arena.bootstrap_rounds)")
    args = parser.parse_args(argv)

    settings = load_settings(profile=args.profile)
    apply_runtime(settings)
    from arena.config import ArenaConfig
    from arena.store import open_vote_store

    config = ArenaConfig.from_settings(settings)
    votes_path = settings.path("votes")
    if not votes_path.exists():
        print(f"no vote store at {votes_path}: nobody has voted yet", file=sys.stderr)
        return 1
    store = open_vote_store(settings)
    if args.command == "export":
        from arena.export import export_votes

        report = export_votes(store, config, args.output or settings.path("datasets"))
        print(report.summary())
        return 0

    from arena.leaderboard import compute_leaderboard, write_plots

    board_data = compute_leaderboard(
        store.votes(),
        bootstrap_rounds=config.bootstrap_rounds if args.rounds is None else args.rounds,
        elo_k=config.elo_k,
        scale=config.elo_scale,
        base=config.elo_base,
        abuse_votes=config.abuse_votes,
        abuse_minutes=config.abuse_minutes,
    )
    print(board_data.format_table())
    print(
        f"\n{board_data.votes_used} votes used, {board_data.votes_excluded} excluded "
        f"from {board_data.flagged_sessions} flagged sessions"
    )
    ratings, heatmap = write_plots(board_data, args.output or Path(config.leaderboard_dir))
    print(f"plots: {ratings} {heatmap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
