"""One run of the loop (votes -> export -> candidate -> gate -> publish), its status block, and
the loop as a background thread of the app."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from retraining.config import (
    BUSY,
    FAILED,
    IDLE,
    PUBLISHED,
    REJECTED,
    REJECTED_MARKER,
    RUNNING,
    WAITING,
    RetrainConfig,
)
from retraining.gate import Evaluation, evaluate_candidate, gate
from retraining.status import LoopBusy, StatusFile, loop_lock, read_status
from settings import Settings


# ------------------------------------------------------------------------------------ votes
def usable_votes(store, arena_config) -> list:
    """The votes training may use: flagged ones left out unless arena.include_flagged_votes."""
    from arena.sessions import abuse_flags

    votes = store.votes()
    if arena_config.include_flagged_votes:
        return votes
    flagged = abuse_flags(votes, arena_config.abuse_votes, arena_config.abuse_minutes).battle_ids
    return [v for v in votes if v.battle_id not in flagged]


def new_votes(store, arena_config, status: dict) -> list:
    """Usable votes cast after the ones the last completed run consumed."""
    since = float(status.get("trained_through") or 0.0)
    return [v for v in usable_votes(store, arena_config) if v.voted_at > since]


# ------------------------------------------------------------------------------------ one run
def _rlhf_folder(settings: Settings) -> Path:
    from training.rlhf import RLHF_ADAPTER

    return settings.path("adapters") / RLHF_ADAPTER


def _discard_unpublished(settings: Settings, version: int | None) -> list[str]:
    """Delete an interrupted run's candidate folder (never the served one) and scratch folders."""
    from modeling.adapters import current_adapter_version

    folder = _rlhf_folder(settings)
    served = current_adapter_version(folder)[0]
    removed = []
    if version is not None and version != served and (folder / str(version)).exists():
        shutil.rmtree(folder / str(version), ignore_errors=True)
        removed.append(str(folder / str(version)))
    if folder.is_dir():
        for scratch in folder.glob(".*.new-*"):  # fsutils.replacing_folder's, left by a kill
            shutil.rmtree(scratch, ignore_errors=True)
            removed.append(str(scratch))
    return removed


def train_candidate(settings: Settings, config: RetrainConfig, output: Path):
    """DPO (or KTO) from the start adapter into `output`, published by nobody."""
    from training.rlhf import prepare_dpo, prepare_kto

    prepare = prepare_kto if config.method == "kto" else prepare_dpo
    return prepare(settings, max_steps=config.max_steps, output=output).train()


def run_once(settings: Settings, *, force: bool = False, on_publish: Callable[[int], None] | None = None,
             echo: Callable[[str], None] = print) -> dict:
    """One check (and, when enough new votes arrived or `force`, one run); returns the status."""
    from arena.config import ArenaConfig
    from arena.export import export_votes
    from arena.store import open_vote_store
    from modeling.adapters import current_adapter_version, next_adapter_version, publish_adapter_version

    config = RetrainConfig.from_settings(settings)
    arena_config = ArenaConfig.from_settings(settings)
    try:
        with loop_lock(settings):
            status = StatusFile(settings, echo)
            if status.data.get("state") == RUNNING:
                previous = status.data.get("candidate_version")
                removed = _discard_unpublished(settings, previous)
                status.log("recover", f"the previous run (pid {status.data.get('pid')}) was interrupted during "
                                      f"{status.data.get('step')}; candidate version {previous} discarded "
                                      f"({len(removed)} folders removed); starting again", state=IDLE,
                           interrupted_runs=int(status.data.get("interrupted_runs") or 0) + 1)
            folder = _rlhf_folder(settings)
            served = current_adapter_version(folder)[0]
            store = open_vote_store(settings)
            try:
                fresh = new_votes(store, arena_config, status.data)
                if len(fresh) < config.min_new_votes and not force:
                    status.update(state=WAITING, served_version=served, new_votes=len(fresh),
                                  message=f"{len(fresh)} of {config.min_new_votes} new usable votes since the last run")
                    return status.data
                through = max((v.voted_at for v in fresh), default=float(status.data.get("trained_through") or 0.0))
                version = next_adapter_version(folder)
                run = {"started_at": time.time(), "candidate_version": version, "new_votes": len(fresh),
                       "served_version_before": served, "method": config.method}
                # Marked before any work: a kill from here on is detected by the next start.
                status.update(state=RUNNING, pid=os.getpid(), candidate_version=version, served_version=served,
                              current_run=run)
                status.log("export", f"{len(fresh)} new usable votes: exporting")
                report = export_votes(store, arena_config, settings.path("datasets"))
            finally:
                store.close()
            try:
                status.log("export", " ".join(report.summary().split("\n")))
                candidate = folder / str(version)
                status.log("train", f"training candidate version {version} ({config.method}) into {candidate}")
                train_candidate(settings, config, candidate)
                status.log("evaluate", f"candidate version {version} against the served model")
                evaluation = evaluate_candidate(settings, candidate, config)
                run["evaluation"] = dataclasses.asdict(evaluation)
                reason = gate(evaluation, config.max_regression)
                run["finished_at"] = time.time()
                if reason is None:
                    publish_adapter_version(folder, version)
                    run.update(outcome=PUBLISHED, reason=None)
                    status.log("publish", f"version {version} published (was {served}): {_evaluation_words(evaluation)}",
                               state=PUBLISHED, served_version=version, trained_through=through, last_run=run,
                               current_run=None, candidate_version=None)
                else:
                    (candidate / REJECTED_MARKER).write_text(reason + "\n")
                    run.update(outcome=REJECTED, reason=reason)
                    status.log("reject", f"version {version} rejected, version {served} keeps serving: {reason}",
                               state=REJECTED, trained_through=through, last_run=run, current_run=None,
                               candidate_version=None, last_rejection=reason)
            except Exception as err:
                # A failed run consumes no votes and leaves no candidate; the served version is untouched.
                _discard_unpublished(settings, version)
                status.log("failed", f"version {version}: {type(err).__name__}: {err}; version {served} keeps serving",
                           state=FAILED, current_run=None, candidate_version=None, last_failure=str(err))
                raise
        if on_publish is not None and status.data.get("state") == PUBLISHED:
            on_publish(version)  # e.g. the app's engine.refresh_adapters: serve it now, not at the next poll
        return status.data
    except LoopBusy as err:
        return {**read_status(settings), "state": BUSY, "message": str(err)}


def _evaluation_words(evaluation: Evaluation) -> str:
    parts = []
    if evaluation.judge_preference is not None:
        parts.append(f"judge preference {evaluation.judge_preference:.3f} over {evaluation.baseline} "
                     f"({evaluation.questions} questions)")
    if evaluation.agreement_candidate is not None:
        parts.append(f"Reddit agreement {evaluation.agreement_candidate:.3f} vs {evaluation.agreement_baseline:.3f} "
                     f"({evaluation.pairs} pairs)")
    return "; ".join(parts) or "no measurements"


def status_markdown(status: dict) -> str:
    """The status block of the app's Arena tab."""
    if not status:
        return "**Retraining loop:** no run yet (`python -m retraining`, or arena.retrain.in_app)."
    when = lambda t: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t)) if t else "never"  # noqa: E731
    lines = [f"**Retraining loop:** {status.get('state', IDLE)}: {status.get('message', '')}",
             f"- served rlhf version: {status.get('served_version')}"]
    last = status.get("last_run") or {}
    if last:
        lines.append(f"- last run: {when(last.get('finished_at'))}, candidate version {last.get('candidate_version')} "
                     f"{last.get('outcome')} ({last.get('new_votes')} new votes)")
    if status.get("last_rejection"):
        lines.append(f"- last rejection: {status['last_rejection']}")
    if status.get("interrupted_runs"):
        lines.append(f"- interrupted runs recovered: {status['interrupted_runs']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ background
def start_in_app(settings: Settings, on_publish: Callable[[int], None] | None = None) -> threading.Thread:
    """The loop as a daemon thread of the app process (arena.retrain.in_app)."""
    config = RetrainConfig.from_settings(settings)

    def loop():
        while True:
            try:
                run_once(settings, on_publish=on_publish)
            except Exception as err:  # logged in the status file by run_once; the app keeps serving
                print(f"retraining loop: {type(err).__name__}: {err}", file=sys.stderr)
            time.sleep(config.poll_s)

    thread = threading.Thread(target=loop, name="wayfarer-retrain", daemon=True)
    thread.start()
    return thread
