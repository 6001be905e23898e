"""`python -m training loop`: the closed loop, arena votes retraining RLHF while the app serves.

One run, when `arena.retrain.min_new_votes` usable (unflagged) votes arrived since the last one:

1. export  the votes (arena.export: arena_preference, arena_negative, chat_feedback);
2. train   a candidate from the RAFT adapter (training.rlhf: DPO on the arena pairs + the Reddit
           pairs, or KTO on unpaired rows with `arena.retrain.method: kto`) into its OWN version
           folder, adapters/rlhf/<version>/, which nothing serves yet;
3. evaluate it against the served rlhf (or the start adapter before there is one) on the golden
           questions: the local probability judge, pairwise in both orders (evaluation.judge), and
           the Reddit-preference agreement (evaluation.reddit_preference's pairs: the share where
           the model gives the upvoted reply more log-probability per token than the other);
4. publish it (the atomic rewrite of adapters/rlhf/CURRENT, modeling.adapters) only when it does
           not regress by more than `arena.retrain.max_regression`; app processes then hot-swap
           it in (model.adapter_poll_s, chatbot.local_engine). A rejected candidate's folder is
           kept (for inspection) and marked REJECTED; it is never served.

Every step goes to a status file, paths.home/retrain_status.json (written atomically), which
the app shows in the Arena tab: state, last run, and why a candidate was rejected.

Crash safety. One loop at a time per home: an exclusive `flock` on paths.home/retrain.lock,
which the kernel releases when its process dies, so a kill -9 never leaves a stale lock. The
status says `running` while a run is under way; a run that finds it so while holding the lock
knows the previous one was killed: it logs that, deletes the unpublished candidate folder and
any half-written scratch folder, and starts the run again (its votes were not consumed). The
served version is untouched throughout: only step 4's pointer write changes what is served.

The worker shares the vote store with the app processes (SQLite file or PostgreSQL); it also
runs inside the app (`arena.retrain.in_app`), as a background thread.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fsutils import write_text_atomic
from settings import ConfigError, Settings, apply_runtime, build_dataclass

STATUS_FILE = "retrain_status.json"
LOCK_FILE = "retrain.lock"
REJECTED_MARKER = "REJECTED"  # written into a rejected candidate's folder
CANDIDATE = "candidate"  # the candidate's name in the evaluation engine
METHODS = ("dpo", "kto")
LOG_LINES = 200  # status log entries kept

# States of the status file.
IDLE, WAITING, RUNNING, PUBLISHED, REJECTED, FAILED, BUSY = (
    "idle", "waiting", "running", "published", "rejected", "failed", "busy")


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """`arena.retrain` (wayfarer.yaml says what each key does)."""

    min_new_votes: int = 50
    max_regression: float = 0.05
    eval_questions: int = 8
    eval_max_new_tokens: int = 96
    reddit_pairs: int = 32
    max_steps: int | None = None
    method: str = "dpo"
    poll_s: float = 60.0
    in_app: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"arena.retrain.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.min_new_votes < 1 or self.eval_questions < 0 or self.reddit_pairs < 0 or self.poll_s <= 0:
            raise ConfigError("arena.retrain: min_new_votes >= 1, eval_questions and reddit_pairs >= 0, poll_s > 0")
        if not math.isfinite(self.max_regression):
            raise ConfigError("arena.retrain.max_regression must be a number")

    @classmethod
    def from_settings(cls, settings: Settings) -> "RetrainConfig":
        from arena.config import ArenaConfig

        return build_dataclass(cls, ArenaConfig.from_settings(settings).retrain)


class LoopBusy(RuntimeError):
    """Another loop holds paths.home/retrain.lock."""


# ------------------------------------------------------------------------------------ status
def status_path(settings: Settings) -> Path:
    return settings.path("home") / STATUS_FILE


def read_status(settings: Settings) -> dict:
    """The loop's status file ({} before the first run)."""
    try:
        data = json.loads(status_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class _Status:
    """Read-modify-write of the status file by the one loop holding the lock."""

    def __init__(self, settings: Settings, echo: Callable[[str], None] = print):
        self.settings = settings
        self.data = read_status(settings)
        self.echo = echo

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.data["updated_at"] = time.time()
        write_text_atomic(status_path(self.settings), json.dumps(self.data, indent=2, sort_keys=True) + "\n")

    def log(self, step: str, message: str, **fields) -> None:
        self.echo(f"loop [{step}] {message}")
        entries = list(self.data.get("log") or [])[-(LOG_LINES - 1):]
        entries.append({"at": time.time(), "step": step, "message": message})
        self.update(log=entries, step=step, message=message, **fields)


@contextlib.contextmanager
def loop_lock(settings: Settings):
    """Hold paths.home/retrain.lock (LoopBusy when another process holds it). flock: released by
    the kernel when the holder dies, so a killed loop never leaves it stale."""
    path = settings.path("home") / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LoopBusy(f"another retraining loop holds {path}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


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


# ------------------------------------------------------------------------------------ evaluation
@dataclasses.dataclass
class Evaluation:
    """The candidate against the baseline (the served rlhf, or the start adapter)."""

    baseline: str
    questions: int = 0
    judge_preference: float | None = None  # P(candidate better), both orders averaged; 0.5 = equal
    pairs: int = 0
    agreement_candidate: float | None = None  # share of Reddit pairs where the upvoted reply is preferred
    agreement_baseline: float | None = None
    notes: list = dataclasses.field(default_factory=list)


def gate(evaluation: Evaluation, max_regression: float) -> str | None:
    """None when the candidate may be published, else why not (one line)."""
    reasons = []
    if evaluation.judge_preference is not None and 0.5 - evaluation.judge_preference > max_regression:
        reasons.append(f"the judge prefers it to {evaluation.baseline} only {evaluation.judge_preference:.3f} of the "
                       f"time (at least {0.5 - max_regression:.3f} needed: 0.5 - max_regression {max_regression:g})")
    if evaluation.agreement_candidate is not None and evaluation.agreement_baseline is not None:
        drop = evaluation.agreement_baseline - evaluation.agreement_candidate
        if drop > max_regression:
            reasons.append(f"its Reddit-preference agreement {evaluation.agreement_candidate:.3f} is "
                           f"{drop:.3f} below {evaluation.baseline}'s {evaluation.agreement_baseline:.3f} "
                           f"(max_regression {max_regression:g})")
    if evaluation.judge_preference is None and evaluation.agreement_candidate is None:
        reasons.append("nothing to evaluate it on (no golden questions and no Reddit pairs): build the datasets")
    return "; ".join(reasons) or None


def _answers(engine, questions, models: list[str], max_new_tokens: int) -> dict:
    """Greedy answers of every model to every question, the models of a question in one pass."""
    answers = {}
    for question in questions:
        messages = [{"role": "user", "content": question.question}]
        texts = [""] * len(models)
        for row, piece in engine.generate_rows([(messages, m) for m in models], temperature=0,
                                               max_new_tokens=max_new_tokens):
            texts[row] += piece
        answers[question.question_id] = dict(zip(models, texts))
    return answers


def _reply_logprob(engine, rows: list[tuple[list[int], int, str]]) -> list[float]:
    """Mean log-probability per reply token for (ids, reply start, model) rows."""
    import torch

    logits = engine.score_rows([(ids, model) for ids, _, model in rows])
    means = []
    for (ids, start, _), row_logits in zip(rows, logits):
        logp = torch.log_softmax(row_logits[start - 1:-1], dim=-1)
        targets = torch.tensor(ids[start:])
        means.append(float(logp.gather(1, targets.view(-1, 1)).mean()))
    return means


def _agreement(engine, pairs, model: str, max_reply_tokens: int = 96) -> float:
    from evaluation.reddit_preference import preference

    scores = []
    for pair in pairs:
        prompt = engine.build_prompt([{"role": "user", "content": pair.question}])
        rows = []
        for reply in (pair.upvoted, pair.other):
            reply_ids = engine.tokenizer(reply.body, add_special_tokens=False)["input_ids"][:max_reply_tokens]
            rows.append((prompt + list(reply_ids), len(prompt), model))
        upvoted, other = _reply_logprob(engine, rows)
        scores.append(preference(upvoted, other))
    return sum(scores) / len(scores)


def evaluate_candidate(settings: Settings, candidate_dir: Path, config: RetrainConfig) -> Evaluation:
    """Load an evaluation engine (the base, the served adapters and the candidate), then judge
    the candidate against the baseline and measure both models' Reddit-preference agreement."""
    from chatbot.local_engine import ChatEngine
    from evaluation.config import EvaluationConfig
    from evaluation.judge import LocalJudge, PairwiseItem, judge_pairwise
    from evaluation.reddit_preference import build_pairs
    from evaluation.runner import GoldenMissingError, load_golden
    from training.config import TrainingConfig
    from training.rlhf import RLHF_ADAPTER

    evaluation_config = EvaluationConfig.from_settings(settings)
    engine = ChatEngine.from_settings(settings.with_overrides({"model": {"adapter_poll_s": 0}}))
    try:
        engine.load_adapter(CANDIDATE, candidate_dir)
        start = TrainingConfig.from_settings(settings).rlhf_start_adapter
        baseline = next((m for m in (RLHF_ADAPTER, start) if m in engine.adapters), "base")
        result = Evaluation(baseline=baseline)
        try:
            golden = load_golden(settings)
        except GoldenMissingError as err:
            golden = []
            result.notes.append(str(err))
        questions = golden[: config.eval_questions]
        if questions:
            judge = LocalJudge(engine, evaluation_config.judge.local_model, fingerprint="retrain",
                               batch_size=evaluation_config.judge.batch_size,
                               max_prompt_tokens=evaluation_config.judge.max_prompt_tokens)
            answers = _answers(engine, questions, [CANDIDATE, baseline], config.eval_max_new_tokens)
            items = [PairwiseItem(q.question_id, q.question, CANDIDATE, answers[q.question_id][CANDIDATE], baseline,
                                  answers[q.question_id][baseline], q.reference) for q in questions]
            verdicts, _ = judge_pairwise(judge, items, max_answer_chars=evaluation_config.judge.max_answer_chars)
            result.questions = len(verdicts)
            result.judge_preference = sum(v.preference_x for v in verdicts) / len(verdicts)
        if config.reddit_pairs:
            pairs, note = build_pairs(settings, evaluation_config.reddit_preference,
                                      {q.question_id: q.question for q in golden})
            pairs = pairs[: config.reddit_pairs]
            if note:
                result.notes.append(note)
            if pairs:
                result.pairs = len(pairs)
                result.agreement_candidate = _agreement(engine, pairs, CANDIDATE)
                result.agreement_baseline = _agreement(engine, pairs, baseline)
        return result
    finally:
        engine.close()


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
            status = _Status(settings, echo)
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
        return "**Retraining loop:** no run yet (`python -m training loop`, or arena.retrain.in_app)."
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


# ------------------------------------------------------------------------------------ CLI
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
