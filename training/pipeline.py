"""Step `pipeline`: ingest -> index -> build -> qlora -> raft -> rlhf -> evaluate, skipping what is current.

The index comes before the datasets so that a fresh clone's RAFT rows take their distractors
(hard negatives) and the preference pairs their documents from it; the index step first writes
the golden (held-out) thread ids, which the index leaves out. The build's fingerprint includes
the index's, so a changed index rebuilds the datasets and retrains downstream.

A step is current when its output exists and was made from the same inputs: for the adapters
the `inputs_fingerprint` recorded in their metadata (data fingerprints, hyper-parameters, base
model, and for RLHF the RAFT adapter it started from); for ingest, build and index a stamp in
paths.home/pipeline_state.json. Changing the corpus, a setting or an upstream output therefore
reruns exactly the steps downstream of it. The last step, evaluate, answers the golden questions
with every served model and writes the report the app's Evaluation tab shows; its own cache
(per question and model) makes a rerun after one retrained adapter cost that adapter's answers only.

On a CPU with training.side_by_side_sft, qlora and raft (which do not depend on each other)
train at once in two processes, half the threads each (training/side_by_side.py says why).

The ingest step reads the demo corpus only when there are no threads yet or they are the demo's
own (then a changed corpus refreshes them). Threads from the user's dumps or the live API
(`python -m training ingest ...`) are never replaced: the step leaves them as they are, and
`--demo` adds the demo corpus to them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fsutils import files_digest, write_text_atomic
from settings import ConfigError, Settings, apply_runtime
from training.adapter_output import read_metadata
from training.config import config_hash
from training.errors import TrainingError
from training.datasets.schema import DATASET_FORMAT
from training.examples import dataset_fingerprint

STATE_FILE = "pipeline_state.json"
STEP_ORDER = ("ingest", "index", "build", "qlora", "raft", "rlhf", "evaluate")
SFT_STEPS = ("qlora", "raft")  # independent of each other: trained side by side on a CPU when configured


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", nargs="*", choices=STEP_ORDER, default=None, metavar="STEP",
                        help="rerun these steps (no name: all) even when current")
    parser.add_argument("--skip", nargs="+", choices=STEP_ORDER, default=(), metavar="STEP",
                        help="leave these steps out (e.g. index when no embedder is installed)")
    parser.add_argument("--until", choices=STEP_ORDER, default=None, help="stop after this step")
    parser.add_argument("--demo", action="store_true",
                        help="ingest: add the demo corpus to the threads there, even when they hold your own data")


def run(args: argparse.Namespace, settings: Settings) -> int:
    apply_runtime(settings)
    force = set(STEP_ORDER) if args.force == [] else set(args.force or ())
    try:
        outcome = run_pipeline(settings, force=force, skip=set(args.skip), until=args.until, demo=args.demo)
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
    write_text_atomic(_state_path(settings), json.dumps(state, indent=2, sort_keys=True) + "\n")


def _record_seconds(settings: Settings, step: str, seconds: float, side_by_side_with: list[str] = ()) -> None:
    """How long the step's last run took (bench/study_bench.py prints the first run's times), and
    which steps ran at the same time (their seconds overlap)."""
    state = _read_state(settings)
    entry = state.setdefault(step, {})
    entry["seconds"] = round(seconds, 1)
    entry["side_by_side_with"] = list(side_by_side_with)
    write_text_atomic(_state_path(settings), json.dumps(state, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------ steps
# Each step: (fingerprint of its inputs now or None when unknown, is-its-output-there, run it).
def _ingest_fingerprint(settings: Settings) -> str:
    return config_hash({"corpus": files_digest(settings.path("demo_corpus")),
                        "subreddits": settings.get("data.subreddits"), "cleaning": settings.get("data.cleaning")})


def _built_index_fingerprint(settings: Settings) -> str | None:
    """The inputs fingerprint of the index the last index step built (None: no index)."""
    return _read_state(settings).get("index", {}).get("inputs_fingerprint")


def _build_fingerprint(settings: Settings) -> str:
    return config_hash({"format": DATASET_FORMAT, "threads": dataset_fingerprint(settings.path("threads")),
                        "datasets": settings.get("data.datasets"), "retrieval": settings.get("retrieval"),
                        "seed": settings.get("runtime.seed"), "index": _built_index_fingerprint(settings)})


def _index_fingerprint(settings: Settings) -> str:
    # The golden split is decided from the threads and these settings (the index step writes
    # it first), so they stand for the golden ids file, which may not exist yet.
    datasets = settings.get("data.datasets")
    golden = {key: datasets.get(key) for key in ("seed", "golden_fraction", "golden_min_threads", "answer_min_chars")}
    return config_hash({"format": DATASET_FORMAT, "threads": dataset_fingerprint(settings.path("threads")),
                        "golden": golden, "seed": settings.get("runtime.seed"),
                        "retrieval": settings.get("retrieval"), "embedder": settings.get("embedder")})


def _run_ingest(settings: Settings, *, replace: bool) -> None:
    from training.ingest import ingest_to_threads

    print(ingest_to_threads(settings, replace=replace).summary())  # the demo corpus


def _run_build(settings: Settings) -> None:
    from training.datasets import build_datasets

    print(build_datasets(settings, index_fingerprint=_built_index_fingerprint(settings)).format())


def _run_index(settings: Settings) -> None:
    from retrieval import build_index
    from training.datasets import write_golden_thread_ids

    golden = write_golden_thread_ids(settings)  # before indexing: the index leaves them out
    print(f"{golden} golden (held-out) threads are left out of the index")
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


def _evaluate_fingerprint(settings: Settings) -> str:
    from evaluation.runner import inputs_fingerprint

    return config_hash({"evaluation": inputs_fingerprint(settings), "index": _built_index_fingerprint(settings)})


def _evaluation_exists(settings: Settings) -> bool:
    from evaluation.runner import outputs_exist

    return outputs_exist(settings)


def _run_evaluate(settings: Settings) -> None:
    """In a spawned process of its own: this one trained the reward model and DPO with every core,
    and that thread's OpenMP pool would slow the serving engine's (chatbot/model_thread.py)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(_evaluate_here, settings).result()


def _evaluate_here(settings: Settings) -> None:
    from evaluation.runner import run_and_report

    apply_runtime(settings)
    result, report = run_and_report(settings)
    print(result.stats.summary(), flush=True)
    for notice in result.notices:
        print(f"note: {notice}", flush=True)
    print(f"report: {report} (the app's Evaluation tab)", flush=True)


def _adapter_current(settings: Settings, name: str, fingerprint: str) -> bool:
    from modeling.adapters import current_adapter_dir

    # The served version (adapters/<name>/CURRENT), or the flat folder of an unversioned adapter.
    metadata = read_metadata(current_adapter_dir(settings.path("adapters") / name))
    return bool(metadata) and metadata.get("inputs_fingerprint") == fingerprint


def _side_by_side(settings: Settings) -> bool:
    """Train qlora and raft at once (training.side_by_side_sft, on a CPU with at least 2 threads)."""
    from modeling.base_model import ModelConfig, resolve_device
    from training.config import TrainingConfig
    from training.side_by_side import side_by_side_threads

    return (TrainingConfig.from_settings(settings).side_by_side_sft and side_by_side_threads(settings) >= 1
            and resolve_device(ModelConfig.from_settings(settings).device) == "cpu")


def run_pipeline(settings: Settings, *, force: set[str] = frozenset(), skip: set[str] = frozenset(),
                 until: str | None = None, demo: bool = False,
                 log: Callable[[str], None] = print) -> PipelineOutcome:
    from corpus import threads_exist
    from training.datasets import DATASET_NAMES

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
        _record_seconds(settings, step, outcome.ran[-1][1])

    def adapter(step: str, fingerprint: Callable[[], str], action: Callable[[], list]):
        if _adapter_current(settings, step, fingerprint()) and step not in force:
            outcome.skipped.append((step, "adapter is current (same data, settings and base)"))
            return
        started = time.monotonic()
        log(f"\n=== {step} ===")
        for result in action():
            log(result.summary())
        outcome.ran.append((step, time.monotonic() - started))
        _record_seconds(settings, step, outcome.ran[-1][1])

    def side_by_side(methods: tuple[str, str]):
        from training.side_by_side import side_by_side_threads, train_side_by_side

        log(f"\n=== {' and '.join(methods)}, side by side, {side_by_side_threads(settings)} thread(s) each ===")
        for run in train_side_by_side(settings, methods):
            log(run.summary)
            outcome.ran.append((run.method, run.seconds))
            _record_seconds(settings, run.method, run.seconds, side_by_side_with=[m for m in methods if m != run.method])

    trained_side_by_side: set[str] = set()
    try:
        for step in steps:
            if step in skip:
                outcome.skipped.append((step, "left out (--skip)"))
            elif step == "ingest":
                from training.ingest import sources_other_than_demo

                yours = sources_other_than_demo(settings)
                if demo:  # asked for: added to whatever is there
                    stamped(step, lambda: _ingest_fingerprint(settings), lambda: False,
                            lambda: _run_ingest(settings, replace=False))
                elif yours:
                    outcome.skipped.append((step, f"the threads hold your data ({'; '.join(yours)}), kept as they are "
                                                  "(`training ingest` adds sources, `pipeline --demo` the demo corpus)"))
                else:  # no threads, or only the demo's own: (re)made from the demo corpus
                    stamped(step, lambda: _ingest_fingerprint(settings),
                            lambda: threads_exist(settings.path("threads")),
                            lambda: _run_ingest(settings, replace=True))
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
            elif step in trained_side_by_side:
                continue
            elif step in SFT_STEPS:
                from training.sft import sft_inputs, train_sft

                # Only when side by side applies: the sequential path checks each adapter in adapter().
                stale = [name for name in SFT_STEPS if name in steps and name not in skip
                         and (name in force or not _adapter_current(settings, name, sft_inputs(settings, name)[0]))
                         ] if _side_by_side(settings) else []
                if len(stale) == 2:
                    trained_side_by_side.update(stale)
                    side_by_side(tuple(stale))
                else:
                    adapter(step, lambda s=step: sft_inputs(settings, s)[0], lambda s=step: [train_sft(settings, s)])
            elif step == "rlhf":
                from training.rlhf import RLHF_ADAPTER, dpo_inputs, online_inputs, run_rlhf
                from training.config import TrainingConfig

                online = TrainingConfig.from_settings(settings).rlhf_method == "online"
                adapter(RLHF_ADAPTER, lambda: online_inputs(settings) if online else dpo_inputs(settings),
                        lambda: run_rlhf(settings))
            elif step == "evaluate":
                stamped(step, lambda: _evaluate_fingerprint(settings), lambda: _evaluation_exists(settings),
                        lambda: _run_evaluate(settings))
    except Exception as err:
        outcome.failed = (step, f"{type(err).__name__}: {err}")
        log(outcome.summary())
        raise TrainingError(f"step {step} failed: {err}") from err
    log("\n" + outcome.summary())
    return outcome
