"""`python -m training ingest`: Reddit dump files or the live API -> clean threads on disk.

Reads (training.reddit_dump or training.reddit_api), cleans (training.cleaning), and saves a
`datasets.Dataset` of threads at paths.threads with `report.json` (the count of every record
by what happened to it) inside the same folder. The folder is written under a temporary name
and renamed into place, so a crash never leaves half a dataset and a failed run keeps the
previous one. A rerun on the same input gives identical files: threads are sorted by id and
the dataset fingerprint is derived from the content.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

REPORT_FILE = "report.json"


class IngestError(RuntimeError):
    """Ingestion produced nothing usable; the previous output is left as it was."""


@dataclasses.dataclass
class IngestReport:
    output: Path
    source: str
    inputs: list[str]
    lines_read: int
    broken_lines: int
    broken_lines_per_file: dict[str, int]
    truncated_files: list[str]
    cleaning: dict[str, Any]  # CleaningStats.as_dict(): per-stage counts and drop reasons

    @property
    def threads_kept(self) -> int:
        return self.cleaning["threads_kept"]

    @property
    def report_path(self) -> Path:
        return self.output / REPORT_FILE

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "inputs": self.inputs,
            "lines_read": self.lines_read,
            "broken_lines": self.broken_lines,
            "broken_lines_per_file": self.broken_lines_per_file,
            "truncated_files": self.truncated_files,
            **self.cleaning,
        }

    def summary(self) -> str:
        c = self.cleaning
        reasons = lambda counts: ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"  # noqa: E731
        read = (
            f"{self.lines_read} lines from {len(self.inputs)} file(s), {self.broken_lines} broken"
            if self.source == "dump"
            else f"{c['submissions'] + c['comments']} records from the Reddit API"
        )
        subs = ", ".join(f"{name} {n}" for name, n in c["threads_per_subreddit"].items())
        return "\n".join(
            [
                f"ingest: read {read}",
                f"  submissions {c['submissions']}: {c['threads_kept']} threads kept; dropped: {reasons(c['dropped_submissions'])}",
                f"  comments {c['comments']}: {c['comments_kept']} kept; dropped: {reasons(c['dropped_comments'])}",
                f"  duplicates: {c['duplicates']['submissions']} submissions, {c['duplicates']['comments']} comments; "
                f"orphan comments: {c['orphans']}; unrecognised records: {c['unrecognised_records']}",
                f"  {len(c['threads_per_subreddit'])} subreddits: {subs or '-'}",
                f"  saved to {self.output} (report: {self.report_path.name})",
            ]
        )


def thread_features():
    """The thread schema shared with retrieval and training.datasets (see the brief)."""
    import datasets

    comment = {
        "comment_id": datasets.Value("string"),
        "body": datasets.Value("string"),
        "score": datasets.Value("int64"),
        "created_utc": datasets.Value("int64"),
        "depth": datasets.Value("int64"),
    }
    return datasets.Features(
        {
            "thread_id": datasets.Value("string"),
            "subreddit": datasets.Value("string"),
            "title": datasets.Value("string"),
            "body": datasets.Value("string"),
            "permalink": datasets.Value("string"),
            "score": datasets.Value("int64"),
            "num_comments": datasets.Value("int64"),
            "created_utc": datasets.Value("int64"),
            "comments": datasets.List(comment),
        }
    )


def _progress(iterable: Iterable, enabled: bool, **kwargs) -> Iterator:
    from tqdm.auto import tqdm

    disable = kwargs.pop("disable", False) or not enabled
    return iter(tqdm(iterable, mininterval=0.5, file=sys.stderr, disable=disable, **kwargs))


def _dump_records(inputs: list[Path], stats, progress: bool) -> Iterator[tuple[dict, str | None]]:
    from training.reddit_dump import expand_inputs, kind_from_filename, read_dump_file

    files = expand_inputs(inputs)
    for path in _progress(files, progress, desc="files", unit="file", disable=len(files) < 2):
        hint = kind_from_filename(path)
        for record in _progress(read_dump_file(path, stats), progress, desc=path.name, unit=" lines", leave=False):
            yield record, hint


def _api_records(settings, limit: int | None, progress: bool) -> Iterator[tuple[dict, None]]:
    from training.reddit_api import api_config_from_settings, create_reddit, fetch_records

    config = api_config_from_settings(settings)
    reddit = create_reddit()
    records = fetch_records(reddit, settings.get("data.subreddits") or [], config, limit=limit)
    for record in _progress(records, progress, desc="reddit api", unit=" records"):
        yield record, None


def save_threads(threads: list[dict], output: Path, report: dict[str, Any], progress: bool = True) -> None:
    """Write the dataset + report under a temporary name, then swap it into place."""
    import datasets

    if output.exists() and not output.is_dir():
        raise IngestError(f"output {output} exists and is not a folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.new-", dir=output.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it owner-only; the result is an ordinary folder
        content = json.dumps(threads, sort_keys=True, ensure_ascii=False).encode()
        dataset = datasets.Dataset.from_list(threads, features=thread_features())
        # A content fingerprint instead of a random one keeps state.json identical across reruns.
        dataset._fingerprint = hashlib.sha256(content).hexdigest()[:16]
        bars_were_on = not datasets.utils.are_progress_bars_disabled()
        if not progress:
            datasets.disable_progress_bars()
        try:
            dataset.save_to_disk(str(staging))
        finally:
            if bars_were_on:
                datasets.enable_progress_bars()
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        old = None
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            output.rename(old / output.name)
        staging.rename(output)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def ingest_to_threads(
    settings,
    inputs: list[Path] | None = None,
    output: Path | None = None,
    source: str = "dump",
    limit: int | None = None,
    progress: bool = True,
) -> IngestReport:
    """Read, clean and save threads; returns the report (also written as report.json)."""
    from training.cleaning import ThreadBuilder, cleaning_config_from_settings
    from training.reddit_dump import DumpStats

    if source not in {"dump", "api"}:
        raise ValueError(f"source must be 'dump' or 'api', not {source!r}")
    output = Path(output) if output is not None else settings.path("threads")
    builder = ThreadBuilder(cleaning_config_from_settings(settings), settings.get("data.subreddits") or [])
    stats = DumpStats()
    if source == "dump":
        inputs = [Path(p) for p in inputs] if inputs else [settings.path("demo_corpus")]
        records = _dump_records(inputs, stats, progress)
    else:
        inputs = []
        records = _api_records(settings, limit, progress)
    for record, hint in records:
        builder.add(record, hint)
    threads = builder.finish()
    report = IngestReport(
        output=output,
        source=source,
        inputs=sorted(stats.lines) if source == "dump" else [],
        lines_read=stats.total_lines,
        broken_lines=stats.total_broken,
        broken_lines_per_file={k: v for k, v in sorted(stats.broken_lines.items()) if v},
        truncated_files=stats.truncated_files,
        cleaning=builder.stats.as_dict(),
    )
    if not threads:
        raise IngestError(f"no thread survived cleaning; {output} was left unchanged\n{report.summary()}")
    save_threads(threads, output, report.to_dict(), progress=progress)
    return report


def load_report(output: Path) -> dict[str, Any]:
    return json.loads((Path(output) / REPORT_FILE).read_text())


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", nargs="+", type=Path, metavar="PATH",
        help="dump files or folders of RS_*/RC_* files (default: paths.demo_corpus)",
    )
    parser.add_argument(
        "--source", choices=("dump", "api"), default="dump",
        help="dump: read files; api: fetch data.subreddits live (needs REDDIT_* environment variables)",
    )
    parser.add_argument("--output", type=Path, help="where the thread dataset goes (default: paths.threads)")
    parser.add_argument("--limit", type=int, help="api: posts per listing and subreddit (default: data.cleaning.api.limit)")


def run(args: argparse.Namespace, settings) -> int:
    from settings import ConfigError
    from training.reddit_api import MissingCredentialsError, RedditApiError
    from training.reddit_dump import DumpInputError

    try:
        report = ingest_to_threads(settings, inputs=args.input, output=args.output, source=args.source, limit=args.limit)
    except (DumpInputError, MissingCredentialsError, RedditApiError, IngestError, ConfigError, ValueError) as err:
        print(f"ingest: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0
