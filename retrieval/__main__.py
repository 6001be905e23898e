"""`python -m retrieval index|query`: build the index, or try a search from the shell.

The index is the local folder paths.index, or a Chroma server when retrieval.chroma.mode is http
(e.g. WAYFARER__RETRIEVAL__CHROMA__MODE=http WAYFARER__RETRIEVAL__CHROMA__HOST=chroma.internal).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from settings import apply_runtime, load_settings


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2024-05-31") from err


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m retrieval", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="configuration profile (default: WAYFARER_PROFILE or the YAML's)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    index = commands.add_parser("index", help="embed the cleaned threads into the Chroma index (incremental)")
    index.add_argument("--threads", type=Path, help="threads dataset folder (default: paths.threads)")
    index.add_argument("--rebuild", action="store_true", help="drop this embedder's collection and build it again")
    index.add_argument("--prune", action="store_true", help="delete collections built with other embedders")
    query = commands.add_parser("query", help="print the chunks nearest a question")
    query.add_argument("question")
    query.add_argument("-k", type=int, default=None, help="number of hits (default: retrieval.top_k)")
    query.add_argument("--subreddit", help="only this subreddit")
    query.add_argument("--min-score", type=int, help="only threads with at least this score")
    query.add_argument("--since", type=_date, help="only threads posted on or after this date (YYYY-MM-DD)")
    query.add_argument("--until", type=_date, help="only threads posted on or before this date (YYYY-MM-DD)")
    return parser


def index_command(args, settings) -> int:
    """`python -m retrieval index`: the exit status."""
    from corpus import ThreadsMissingError
    from retrieval.indexing import build_index
    from retrieval.store import ChromaUnavailableError

    try:
        report = build_index(settings, threads_path=args.threads, rebuild=args.rebuild, prune_other_embedders=args.prune)
    except (ThreadsMissingError, ChromaUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def query_command(args, settings) -> int:
    """`python -m retrieval query`: the exit status."""
    from retrieval.search import Retriever
    from retrieval.store import ChromaUnavailableError, IndexMissingError

    try:
        retriever = Retriever.from_settings(settings)
    except (IndexMissingError, ChromaUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    until = dt.datetime.combine(args.until, dt.time.max, dt.timezone.utc) if args.until else None
    hits = retriever.search(
        args.question, k=args.k, subreddit=args.subreddit, min_score=args.min_score, since=args.since, until=until,
        min_similarity=-1.0,  # show everything asked for; the chat applies the floor
    )
    if not hits:
        print("no matching chunks")
    for rank, hit in enumerate(hits, 1):
        when = dt.datetime.fromtimestamp(hit.created_utc, dt.timezone.utc).date()
        print(f"{rank}. [{hit.similarity:.3f}] {hit.doc_id}  r/{hit.subreddit}  score {hit.score}  {when}")
        print(f"   {hit.title}\n   {hit.permalink}")
        snippet = " ".join(hit.text.split())
        print(f"   {snippet[:300]}{'...' if len(snippet) > 300 else ''}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings(profile=args.profile)
    apply_runtime(settings)
    return index_command(args, settings) if args.command == "index" else query_command(args, settings)


if __name__ == "__main__":
    sys.exit(main())
