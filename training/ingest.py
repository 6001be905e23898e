"""`python -m training ingest`: Reddit dump files or the live API -> clean threads on disk.

Reads (training.reddit_dump or training.reddit_api), cleans (training.cleaning), and saves a
`datasets.Dataset` of threads at paths.threads with `report.json` (the count of every record
by what happened to it) inside the same folder. The folder is written under a temporary name
and renamed into place, so a crash never leaves half a dataset and a failed run keeps the
previous one. A rerun on the same input gives identical files: threads are sorted by id and
the dataset fingerprint is derived from the content.

A run ADDS its source to the threads already there (dumps and the live API, deduplicated by
thread id, the newly read version of a thread winning) unless told to replace them: a user's
own dumps must never be lost to a later `ingest` of something else, such as the demo corpus.
`report.json` lists every source the threads came from (`sources`), so the pipeline can tell
the demo's threads, which it may refresh, from the user's, which it never touches. A thread's
comments are attached when they are read in the same run as their post (RS_ with RC_ files).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fsutils import replacing_folder

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
    # How this run's threads joined those already there: mode (add / replace), threads_before,
    # threads_added, threads_updated, threads_total. Printed, not saved: a rerun of the same
    # input must write identical files.
    merge: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Every source the saved threads come from, oldest first: source, inputs, threads_kept, demo.
    sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)

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
            "sources": self.sources,
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
            line
            for line in [
                f"ingest: read {read}",
                f"  submissions {c['submissions']}: {c['threads_kept']} threads kept; dropped: {reasons(c['dropped_submissions'])}",
                f"  comments {c['comments']}: {c['comments_kept']} kept; dropped: {reasons(c['dropped_comments'])}",
                f"  duplicates: {c['duplicates']['submissions']} submissions, {c['duplicates']['comments']} comments; "
                f"orphan comments: {c['orphans']}; unrecognised records: {c['unrecognised_records']}",
                f"  {len(c['threads_per_subreddit'])} subreddits: {subs or '-'}",
                self._merge_line(),
                f"  saved to {self.output} (report: {self.report_path.name})" if self.merge else "",
            ]
            if line
        )

    def _merge_line(self) -> str:
        m = self.merge
        if not m:  # nothing was saved
            return ""
        if m["mode"] == "replace":
            return f"  replaced the previous threads: {m['threads_total']} threads now"
        return (
            f"  added to {m['threads_before']} existing threads: {m['threads_added']} new, "
            f"{m['threads_updated']} updated, {m['threads_total']} threads now from {len(self.sources)} source(s)"
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
    records = fetch_records(reddit, settings.config.data.subreddits, config, limit=limit)
    for record in _progress(records, progress, desc="reddit api", unit=" records"):
        yield record, None


def save_threads(threads: list[dict], output: Path, report: dict[str, Any], progress: bool = True) -> None:
    """Write the dataset + report under a temporary name, then swap it into place."""
    import datasets

    if output.exists() and not output.is_dir():
        raise IngestError(f"output {output} exists and is not a folder")
    with replacing_folder(output) as staging:
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


def _saved_threads(output: Path) -> tuple[list[dict], list[dict]]:
    """The threads already at `output` and the sources they came from ([] and [] when none)."""
    import datasets

    # save_to_disk writes state.json (training.datasets is not imported: `ingest` runs without it)
    if not (Path(output) / "state.json").is_file():
        return [], []
    try:
        threads = datasets.load_from_disk(str(output)).to_list()
    except Exception as err:  # unreadable Arrow files or another schema: never guess, never overwrite
        raise IngestError(
            f"the threads already at {output} cannot be read ({type(err).__name__}: {err}), so this source "
            "cannot be added to them; they were left unchanged (pass --replace to start over)"
        ) from err
    try:
        report = load_report(output)
    except (OSError, ValueError):
        report = {}
    if "sources" in report:
        sources = report["sources"]
    elif report.get("source"):  # a report written before sources were recorded: its one run
        sources = [{"source": report["source"], "inputs": report.get("inputs", []),
                    "threads_kept": report.get("threads_kept"), "demo": None}]
    else:  # threads saved by something else: nothing is known about them, so they are the user's
        sources = [{"source": "unknown", "inputs": [], "threads_kept": len(threads), "demo": False}]
    return threads, sources


def _is_demo(settings, source: str, inputs: list[str]) -> bool:
    demo = settings.path("demo_corpus").resolve()
    return source == "dump" and bool(inputs) and all(Path(p).resolve().is_relative_to(demo) for p in inputs)


def sources_other_than_demo(settings, output: Path | None = None) -> list[str]:
    """The sources of the threads at `output` (default paths.threads) that are not the demo
    corpus, described for a person; [] when there are no threads or only the demo's."""
    output = Path(output) if output is not None else settings.path("threads")
    _, sources = _saved_threads(output)
    described = []
    for entry in sources:
        demo = entry.get("demo")
        if demo is None:
            demo = _is_demo(settings, entry.get("source", ""), list(entry.get("inputs") or []))
        if not demo:
            inputs = ", ".join(Path(p).name for p in entry.get("inputs") or [])
            described.append(f"{entry.get('source')}{f' ({inputs})' if inputs else ''}")
    return described


def _merged(existing: list[dict], new: list[dict]) -> tuple[list[dict], dict[str, int]]:
    by_id = {thread["thread_id"]: thread for thread in existing}
    added = sum(thread["thread_id"] not in by_id for thread in new)
    by_id.update((thread["thread_id"], thread) for thread in new)
    counts = {"threads_before": len(existing), "threads_added": added, "threads_updated": len(new) - added}
    return [by_id[key] for key in sorted(by_id)], counts


def ingest_to_threads(
    settings,
    inputs: list[Path] | None = None,
    output: Path | None = None,
    source: str = "dump",
    limit: int | None = None,
    progress: bool = True,
    replace: bool = False,
) -> IngestReport:
    """Read, clean and save threads, added to those at `output` (`replace`: instead of them);
    returns the report (also written as report.json)."""
    from training.cleaning import ThreadBuilder, cleaning_config_from_settings
    from training.reddit_dump import DumpStats

    if source not in {"dump", "api"}:
        raise ValueError(f"source must be 'dump' or 'api', not {source!r}")
    output = Path(output) if output is not None else settings.path("threads")
    builder = ThreadBuilder(cleaning_config_from_settings(settings), settings.config.data.subreddits)
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
    existing, sources = ([], []) if replace else _saved_threads(output)
    threads, counts = _merged(existing, threads)
    report.merge = {"mode": "replace" if replace else "add", **counts, "threads_total": len(threads)}
    entry = {"source": source, "inputs": report.inputs, "threads_kept": report.threads_kept,
             "demo": _is_demo(settings, source, report.inputs)}
    # The same source read again (an updated dump, the API again) keeps its place in the list.
    same = [i for i, old in enumerate(sources) if (old.get("source"), old.get("inputs")) == (source, report.inputs)]
    if same:
        sources[same[0]] = entry
    else:
        sources.append(entry)
    report.sources = sources
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
    parser.add_argument(
        "--replace", action="store_true",
        help="replace the threads already there instead of adding this source to them (the default)",
    )


def run(args: argparse.Namespace, settings) -> int:
    from settings import ConfigError
    from training.reddit_api import MissingCredentialsError, RedditApiError
    from training.reddit_dump import DumpInputError

    try:
        report = ingest_to_threads(settings, inputs=args.input, output=args.output, source=args.source,
                                   limit=args.limit, replace=args.replace)
    except (DumpInputError, MissingCredentialsError, RedditApiError, IngestError, ConfigError, ValueError) as err:
        print(f"ingest: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0
