"""`python -m training build`: ingest the demo corpus when no threads exist, then build."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corpus import threads_exist
from settings import ConfigError, Settings
from training.datasets.build import build_datasets
from training.datasets.config import DatasetBuildError

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=Path, default=None,
                        help="cleaned threads dataset (default: paths.threads; ingested from the demo corpus when missing)")
    parser.add_argument("--output", type=Path, default=None, help="where the datasets go (default: paths.datasets)")
    parser.add_argument("--seed", type=int, default=None, help="seed for splits and sampling (default: data.datasets.seed or runtime.seed)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.seed is not None:
        settings = settings.with_overrides({"data": {"datasets": {"seed": args.seed}}})
    threads = Path(args.threads) if args.threads else settings.path("threads")
    try:
        if not threads_exist(threads):
            # One command from the shipped corpus to datasets: ingest first when nothing is there.
            from training.ingest import IngestError, ingest_to_threads
            from training.reddit_dump import DumpInputError

            print(f"No cleaned threads at {threads}: ingesting the demo corpus first.")
            try:
                print(ingest_to_threads(settings, output=threads).summary())
            except (IngestError, DumpInputError) as err:
                raise DatasetBuildError(f"ingesting the demo corpus failed: {err}") from err
        report = build_datasets(settings, threads=threads, output=args.output)
    except (DatasetBuildError, ConfigError) as err:
        print(f"build: {err}", file=sys.stderr)
        return 2
    print(report.format())
    return 0
