"""Step `pipeline`: ingest -> build -> index -> qlora -> raft -> rlhf, skipping what is current.

A step is current when its output exists and was made from the same inputs: for the adapters
the `inputs_fingerprint` recorded in their metadata (data fingerprints, hyper-parameters, base
model, and for RLHF the RAFT adapter it started from); for ingest, build and index a stamp in
paths.home/pipeline_state.json. Changing the corpus, a setting or an upstream output therefore
reruns exactly the steps downstream of it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from settings import ConfigError, Settings, apply_runtime
from training.common import TrainingError, dataset_fingerprint, read_metadata
from training.config import config_hash

STATE_FILE = "pipeline_state.json"
STEP_ORDER = ("ingest", "build", "index", "qlora", "raft", "rlhf")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", nargs="*", choices=STEP_ORDER, default=None, metavar="STEP",
                        help="rerun these steps (no name: all) even when current")
    parser.add_argument("--skip", nargs="+", choices=STEP_ORDER, default=(), metavar="STEP",
                        help="leave these steps out (e.g. index when no embedder is installed)")
    parser.add_argument("--until", choices=STEP_ORDER, default=None, help="stop after this step")


def run(args: argparse.Namespace, settings: Settings) -> int:
    apply_runtime(settings)
    force = set(STEP_ORDER) if args.force == [] else set(args.force or ())
    try:
        outcome = run_pipeline(settings, force=force, skip=set(args.skip), until=args.until)
    except (TrainingError, ConfigError) as err:
        print(f"pipeline: {err}", file=sys.stderr)
        return 2
    return 0 if outcome.ok else 2


class PipelineOutcome:
    def __init__(self) -> None:
        self.ran: list[tuple[str, float]] = []
        self.skipped: list[tuple[str, str]] = []
        self.failed: tuple[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.failed is None

    def summary(self) -> str:
        lines = ["Pipeline summary:"]
        lines += [f"  ran      {name:<7} {seconds:7.0f} s" for name, seconds in self.ran]
        lines += [f"  skipped  {name:<7} {reason}" for name, reason in self.skipped]
        if self.failed:
            lines.append(f"  FAILED   {self.failed[0]:<7} {self.failed[1]}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ state
def _state_path(settings: Settings) -> Path:
    return settings.path("home") / STATE_FILE


def _read_state(settings: Settings) -> dict:
    try:
        return json.loads(_state_path(settings).read_text())
    except (OSError, ValueError):
        return {}


def _write_stamp(settings: Settings, step: str, fingerprint: str) -> None:
    state = _read_state(settings)
    state[step] = {"inputs_fingerprint": fingerprint, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    scratch.replace(path)


def _files_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------ steps
# Each step: (fingerprint of its inputs now or None when unknown, is-its-output-there, run it).
def _ingest_fingerprint(settings: Settings) -> str:
    return config_hash({"corpus": _files_fingerprint(settings.path("demo_corpus")),
                        "subreddits": settings.get("data.subreddits"), "cleaning": settings.get("data.cleaning")})


def _build_fingerprint(settings: Settings) -> str:
    return config_hash({"threads": dataset_fingerprint(settings.path("threads")),
                        "datasets": settings.get("data.datasets"), "retrieval": settings.get("retrieval"),
                        "seed": settings.get("runtime.seed")})


def _index_fingerprint(settings: Settings) -> str:
    return config_hash({"threads": dataset_fingerprint(settings.path("threads")),
                        "golden": _files_fingerprint_or_none(settings.path("datasets") / "golden_thread_ids.json"),
                        "retrieval": settings.get("retrieval"), "embedder": settings.get("embedder")})


def _files_fingerprint_or_none(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def _run_ingest(settings: Settings) -> None:
    from training.ingest import ingest_to_threads

    print(ingest_to_threads(settings).summary())


def _run_build(settings: Settings) -> None:
    from training.datasets import build_datasets

    print(build_datasets(settings).format())


def _run_index(settings: Settings) -> None:
    from retrieval import build_index

    report = build_index(settings)
    print(report.summary() if hasattr(report, "summary") else report)


def _index_available() -> str | None:
    """None when retrieval can build an index, else why not."""
    try:
        import retrieval

        retrieval.build_index  # noqa: B018 - resolves the lazy export (imports chromadb)
    except Exception as err:  # a missing optional dependency or an unfinished module
        return f"retrieval.build_index is not available ({err})"
    return None


def _index_exists(settings: Settings) -> bool:
    """The local index folder exists; always False for a Chroma server (retrieval.chroma.mode:
    http), whose contents a stamp here cannot vouch for: the incremental indexer then only
    compares hashes and embeds nothing when the server is current."""
    from retrieval.config import HTTP, RetrievalConfig

    return RetrievalConfig.from_settings(settings).chroma.mode != HTTP and settings.path("index").is_dir()


def _adapter_current(settings: Settings, name: str, fingerprint: str) -> bool:
    metadata = read_metadata(settings.path("adapters") / name)
    return bool(metadata) and metadata.get("inputs_fingerprint") == fingerprint


def run_pipeline(settings: Settings, *, force: set[str] = frozenset(), skip: set[str] = frozenset(),
                 until: str | None = None,
                 log: Callable[[str], None] = print) -> PipelineOutcome:
    from training.datasets import DATASET_NAMES, threads_exist

    outcome = PipelineOutcome()
    steps = STEP_ORDER[: STEP_ORDER.index(until) + 1] if until else STEP_ORDER
    datasets_dir = settings.path("datasets")

    def stamped(step: str, fingerprint: Callable[[], str], exists: Callable[[], bool], action: Callable[[], None]):
        current = exists() and _read_state(settings).get(step, {}).get("inputs_fingerprint") == fingerprint()
        if current and step not in force:
            outcome.skipped.append((step, "current (same inputs and settings)"))
            return
        started = time.monotonic()
        log(f"\n=== {step} ===")
        action()
        _write_stamp(settings, step, fingerprint())
        outcome.ran.append((step, time.monotonic() - started))

    def adapter(step: str, fingerprint: Callable[[], str], action: Callable[[], list]):
        if _adapter_current(settings, step, fingerprint()) and step not in force:
            outcome.skipped.append((step, "adapter is current (same data, settings and base)"))
            return
        started = time.monotonic()
        log(f"\n=== {step} ===")
        for result in action():
            log(result.summary())
        outcome.ran.append((step, time.monotonic() - started))

    try:
        for step in steps:
            if step in skip:
                outcome.skipped.append((step, "left out (--skip)"))
            elif step == "ingest":
                stamped(step, lambda: _ingest_fingerprint(settings), lambda: threads_exist(settings.path("threads")),
                        lambda: _run_ingest(settings))
            elif step == "build":
                stamped(step, lambda: _build_fingerprint(settings),
                        lambda: all((datasets_dir / name).is_dir() for name in DATASET_NAMES),
                        lambda: _run_build(settings))
            elif step == "index":
                missing = _index_available()
                if missing:
                    outcome.skipped.append((step, f"{missing}; the chatbot answers without documents"))
                    continue
                stamped(step, lambda: _index_fingerprint(settings), lambda: _index_exists(settings),
                        lambda: _run_index(settings))
            elif step in ("qlora", "raft"):
                from training.sft import sft_inputs, train_sft

                adapter(step, lambda s=step: sft_inputs(settings, s)[0], lambda s=step: [train_sft(settings, s)])
            elif step == "rlhf":
                from training.rlhf import RLHF_ADAPTER, dpo_inputs, online_inputs, run_rlhf
                from training.config import TrainingConfig

                online = TrainingConfig.from_settings(settings).rlhf_method == "online"
                adapter(RLHF_ADAPTER, lambda: online_inputs(settings) if online else dpo_inputs(settings),
                        lambda: run_rlhf(settings))
    except Exception as err:
        outcome.failed = (step, f"{type(err).__name__}: {err}")
        log(outcome.summary())
        raise TrainingError(f"step {step} failed: {err}") from err
    log("\n" + outcome.summary())
    return outcome
