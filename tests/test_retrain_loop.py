"""The closed loop on the real embedded model with a tiny budget: votes -> loop -> new rlhf version.

Model-free checks first (versions, the gate, the store's version columns, the leaderboard), then
one module that trains for real, in order: the loop waits for votes, trains and publishes
version 1 on SQLite; a candidate that must regress is rejected and version 1 keeps serving; a
loop process killed with SIGKILL during retraining (on PostgreSQL, with votes from two other
processes) leaves the served version intact and the next run recovers and publishes; the app's
engine hot-swaps the new version while a stream on the old one is under way, which finishes
normally, and the next battle records the new version.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, make_lora_adapter
from tests.test_training import make_settings

QUESTION = [{"role": "user", "content": "What is the cheapest way from Narita airport to Shinjuku?"}]
# Tiny evaluation budget: two golden questions, short answers, two Reddit pairs.
RETRAIN = {"min_new_votes": 3, "max_regression": 1.0, "eval_questions": 2, "eval_max_new_tokens": 8,
           "reddit_pairs": 2, "max_steps": 1, "method": "dpo", "poll_s": 1, "in_app": False}


def loop_settings(home, **extra):
    """The test_training settings (tiny TRAINING budget) with the loop's tiny budget."""
    retrain = {**RETRAIN, **(extra.pop("retrain", None) or {})}
    arena = {"retrain": retrain, "sampling_weights": {"base": 0}, "use_retrieval": False, **(extra.pop("arena", None) or {})}
    return make_settings(Path(home), arena=arena, model={"adapters": ["raft", "rlhf"], "adapter_poll_s": 0},
                         evaluation={"judge": {"local_model": "base", "batch_size": 4, "max_prompt_tokens": 1024}},
                         **extra)


def session(name: str) -> str:
    return hashlib.sha256(f"retrain-test:{name}".encode()).hexdigest()


def cast_votes(store, count: int, tag: str, *, version_a=None, version_b=None) -> None:
    """`count` finished battles raft vs base with a decisive vote each (a preference pair each)."""
    voter = session(tag)
    for i in range(count):
        question = f"{tag} question {i}: is the JR Pass worth it for two weeks?"
        messages = [{"role": "user", "content": question}]
        battle = store.create_battle(session=voter, question=question, model_a="raft", model_b="base",
                                     messages_a=messages, messages_b=messages, version_a=version_a, version_b=version_b)
        store.finish_battle(battle, "Yes, if you travel between cities: it pays off after two long trips.",
                            "idk")
        store.record_vote(battle, "model_a", voter)


# ------------------------------------------------------------------------------------ model-free
def test_version_folders_pointer_and_the_flat_legacy_layout(tmp_path):
    from modeling.adapters import (
        AdapterLoadError,
        current_adapter_version,
        next_adapter_version,
        publish_adapter_version,
        versioned_name,
    )

    folder = tmp_path / "rlhf"
    assert current_adapter_version(folder) == (None, folder)
    assert next_adapter_version(folder) == 1
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")  # the flat layout: version 0
    assert current_adapter_version(folder) == (0, folder)
    (folder / "1").mkdir()
    with pytest.raises(AdapterLoadError, match="no complete adapter"):
        publish_adapter_version(folder, 1)  # an incomplete folder is never published
    assert current_adapter_version(folder) == (0, folder)
    (folder / "1" / "adapter_config.json").write_text("{}")
    publish_adapter_version(folder, 1)
    assert current_adapter_version(folder) == (1, folder / "1")
    (folder / "2").mkdir()  # a candidate being written
    assert next_adapter_version(folder) == 3
    assert (versioned_name("rlhf", 4), versioned_name("rlhf", 0), versioned_name("base", None)) == ("rlhf@4", "rlhf", "base")


def test_the_gate_rejects_a_regression_beyond_max_regression():
    from retraining import Evaluation, gate

    equal = Evaluation("rlhf", 2, 0.5, 2, 0.5, 0.5)
    worse = Evaluation("rlhf", 2, 0.40, 2, 0.30, 0.50)
    assert gate(equal, 0.0) is None
    assert gate(worse, 0.2) is None  # within the allowed regression
    assert "judge prefers" in gate(worse, 0.05) and "Reddit-preference agreement" in gate(worse, 0.05)
    assert gate(equal, -0.01) is not None  # negative: it must be better
    assert "nothing to evaluate" in gate(Evaluation("rlhf"), 1.0)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_battles_record_versions_and_the_leaderboard_rates_them_apart_or_folded(backend, tmp_path, request):
    from arena.leaderboard import compute_leaderboard
    from arena.store import SCHEMA_VERSION, PostgresVoteStore, SQLiteVoteStore

    store = (PostgresVoteStore(request.getfixturevalue("postgres_dsn")) if backend == "postgres"
             else SQLiteVoteStore(tmp_path / "votes.db"))
    try:
        assert store.schema_version() == SCHEMA_VERSION == 4
        voter = session(backend)
        for i, (version_a, vote) in enumerate([(3, "model_a"), (4, "model_a"), (4, "model_b"), (None, "tie")]):
            battle = store.create_battle(session=voter, question=f"q{i}", model_a="rlhf", model_b="raft",
                                         messages_a=[], messages_b=[], version_a=version_a)
            store.finish_battle(battle, "a", "b")
            store.record_vote(battle, vote, voter)
        assert [b.version_a for b in store.battles()] == [3, 4, 4, None]
        assert [b.version_b for b in store.battles()] == [None] * 4
        votes = store.votes()
        assert [(v.rated_a, v.rated_b) for v in votes] == [("rlhf@3", "raft"), ("rlhf@4", "raft"), ("rlhf@4", "raft"),
                                                            ("rlhf", "raft")]
        apart = compute_leaderboard(votes)
        assert sorted(apart.models) == ["raft", "rlhf", "rlhf@3", "rlhf@4"]
        assert {r.model: r.battles for r in apart.rows}["rlhf@4"] == 2
        folded = compute_leaderboard(votes, fold_versions=True)
        assert sorted(folded.models) == ["raft", "rlhf"] and {r.model: r.battles for r in folded.rows}["rlhf"] == 4
    finally:
        store.close()


def test_the_leaderboard_cli_folds_versions_on_request(tmp_path):
    from arena.store import SQLiteVoteStore

    votes = tmp_path / "votes.db"
    store = SQLiteVoteStore(votes)
    cast_votes(store, 2, "cli", version_a=5)
    env = {**os.environ, "WAYFARER__PATHS__HOME": str(tmp_path), "WAYFARER__PATHS__VOTES": str(votes)}
    run = lambda *flags: subprocess.run([sys.executable, "-m", "arena", "--profile", "local", "leaderboard", *flags],  # noqa: E731
                                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    apart, folded = run(), run("--fold-versions")
    assert apart.returncode == 0 and folded.returncode == 0, apart.stderr + folded.stderr
    assert "raft@5" in apart.stdout and "raft@5" not in folded.stdout and "raft" in folded.stdout


# ------------------------------------------------------------------------------------ hot swap (no training)
@pytest.fixture(scope="module")
def swap_engine(settings, tmp_path_factory):
    """An engine serving rlhf version 1 of a versioned folder (two random tiny adapters, v1 and v2)."""
    from chatbot import ChatEngine
    from modeling.adapters import publish_adapter_version

    root = tmp_path_factory.mktemp("swap-adapters")
    make_lora_adapter(settings, root / "raft", seed=2)
    for version, seed in ((1, 11), (2, 12)):
        make_lora_adapter(settings, root / "rlhf" / str(version), seed=seed)
    publish_adapter_version(root / "rlhf", 1)
    engine = ChatEngine.from_settings(settings.with_overrides({"model": {"adapters": ["raft", "rlhf"]}}), adapters_dir=root)
    yield engine, root
    engine.close()


def _wait_for(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_hot_swap_lets_the_stream_under_way_finish_on_the_old_version(swap_engine):
    import torch

    from modeling.adapters import publish_adapter_version

    engine, root = swap_engine
    greedy = {"temperature": 0, "max_new_tokens": 40}
    assert engine.adapter_versions["rlhf"] == 1
    expected_v1 = engine.complete(QUESTION, "rlhf", **greedy)
    ids = engine.build_prompt(QUESTION)
    logits_v1 = engine.score_rows([(ids, "rlhf")])[0]

    stream = engine.generate(QUESTION, "rlhf", **greedy)
    first = next(stream)  # the row is running on version 1
    publish_adapter_version(root / "rlhf", 2)
    assert engine.refresh_adapters(root) == {"rlhf": 2}
    assert engine.adapter_versions["rlhf"] == 2
    assert {"rlhf", "rlhf@2"} <= set(engine.loaded_slots)  # the old slot drains
    assert first + "".join(stream) == expected_v1  # finished normally, on version 1 all along
    assert _wait_for(lambda: "rlhf" not in engine.loaded_slots), engine.loaded_slots  # dropped once unused
    assert engine.adapters == ["base", "raft", "rlhf"]

    engine.load_adapter("v2-check", root / "rlhf" / "2")
    logits_new, logits_check = engine.score_rows([(ids, "rlhf"), (ids, "v2-check")])
    assert torch.allclose(logits_new, logits_check, atol=1e-4)  # new requests run on version 2
    assert not torch.allclose(logits_new, logits_v1, atol=1e-3)
    assert engine.refresh_adapters(root) == {}  # nothing new


# ------------------------------------------------------------------------------------ the loop, trained for real
@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home with the demo corpus built and a tiny RAFT adapter (the loop's start adapter)."""
    from training.pipeline import run_pipeline
    from training.sft import train_sft

    root = tmp_path_factory.mktemp("retrain-home")
    settings = loop_settings(root)
    run_pipeline(settings, until="build", skip={"index"})
    train_sft(settings, "raft")
    return root


@pytest.fixture(scope="module")
def app_engine(home):
    """The app's engine: raft, and rlhf once published (refresh_adapters)."""
    from chatbot import ChatEngine

    engine = ChatEngine.from_settings(loop_settings(home))
    yield engine
    engine.close()


def _current(settings) -> str:
    return (settings.path("adapters") / "rlhf" / "CURRENT").read_text().strip()


def test_1_the_loop_waits_for_votes_then_trains_and_publishes_version_1(home, app_engine):
    from arena.store import open_vote_store
    from retraining import PUBLISHED, WAITING, read_status, run_once, status_markdown

    settings = loop_settings(home)
    assert run_once(settings)["state"] == WAITING
    store = open_vote_store(settings)
    cast_votes(store, 2, "first")
    assert run_once(settings)["message"].startswith("2 of 3 new usable votes")
    cast_votes(store, 1, "first-more")
    store.close()
    status = run_once(settings)
    assert status["state"] == PUBLISHED and status["served_version"] == 1, status.get("message")
    assert _current(settings) == "1" and (settings.path("adapters") / "rlhf" / "1" / "adapter_model.safetensors").exists()
    evaluation = status["last_run"]["evaluation"]
    assert evaluation["baseline"] == "raft" and evaluation["questions"] == 2 and evaluation["judge_preference"] is not None
    assert [e["step"] for e in read_status(settings)["log"]][-5:] == ["export", "export", "train", "evaluate", "publish"]
    assert "published" in status_markdown(read_status(settings))
    assert run_once(settings)["state"] == WAITING  # its votes are consumed
    assert app_engine.refresh_adapters(settings.path("adapters")) == {"rlhf": 1}


def test_2_a_candidate_that_regresses_is_rejected_and_the_old_version_keeps_serving(home, app_engine):
    from arena.store import open_vote_store
    from retraining import REJECTED, REJECTED_MARKER, run_once, status_markdown

    # max_regression -1: it would have to beat the served rlhf by more than certainty: must be rejected.
    settings = loop_settings(home, retrain={"max_regression": -1.0})
    store = open_vote_store(settings)
    cast_votes(store, 3, "second")
    store.close()
    status = run_once(settings)
    assert status["state"] == REJECTED, status.get("message")
    assert status["last_run"]["evaluation"]["baseline"] == "rlhf"  # judged against the served version
    assert _current(settings) == "1" and status["served_version"] == 1
    assert (settings.path("adapters") / "rlhf" / "2" / REJECTED_MARKER).exists()
    assert "last rejection" in status_markdown(status)
    assert app_engine.refresh_adapters(settings.path("adapters")) == {}
    assert app_engine.adapter_versions["rlhf"] == 1


def test_3_kill_9_during_retraining_on_postgres_leaves_the_served_version_and_the_next_run_recovers(
        home, app_engine, postgres_dsn, monkeypatch):
    from retraining import PUBLISHED, RUNNING, read_status, run_once

    monkeypatch.setenv("WAYFARER_VOTES_DSN", postgres_dsn)
    pg = {"arena": {"vote_store": "postgres"}}
    settings = loop_settings(home, **json.loads(json.dumps(pg)))
    env = {**os.environ, "WAYFARER__ARENA__VOTE_STORE": "postgres", "WAYFARER_VOTES_DSN": postgres_dsn,
           "PYTHONPATH": str(REPO)}
    # Two other processes (standing in for two app processes) vote into the one database at once.
    voters = [subprocess.Popen([sys.executable, str(REPO / "tests" / "vote_burst.py"), f"app-{n}", "4"], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, text=True) for n in range(2)]
    for voter in voters:
        assert voter.wait(timeout=120) == 0
    served_files = sorted(p.name for p in (settings.path("adapters") / "rlhf" / "1").iterdir())

    worker = subprocess.Popen([sys.executable, "-m", "tests.retrain_worker", str(home), json.dumps(pg)], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: read_status(settings).get("step") == "train" or worker.poll() is not None, 300)
        time.sleep(3)  # into the trainer
        assert worker.poll() is None, "the worker ended before it could be killed"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    killed = read_status(settings)
    assert killed["state"] == RUNNING and killed["candidate_version"] == 3
    assert _current(settings) == "1"
    assert sorted(p.name for p in (settings.path("adapters") / "rlhf" / "1").iterdir()) == served_files
    assert app_engine.refresh_adapters(settings.path("adapters")) == {}

    status = run_once(settings)  # the next start: detects the killed run, discards it, runs again
    assert status["state"] == PUBLISHED, status.get("message")
    assert status["interrupted_runs"] == 1 and any(e["step"] == "recover" for e in status["log"])
    assert status["last_run"]["new_votes"] == 8  # both processes' votes, from PostgreSQL
    assert _current(settings) == "3" and status["served_version"] == 3
    assert not list((settings.path("adapters") / "rlhf").glob(".*.new-*"))


def test_4_the_app_engine_swaps_in_the_new_version_mid_stream_and_the_next_battle_records_it(home, app_engine):
    from arena.battle import Arena
    from arena.config import ArenaConfig
    from arena.store import open_vote_store

    settings = loop_settings(home)
    assert app_engine.adapter_versions["rlhf"] == 1
    greedy = {"temperature": 0, "max_new_tokens": 24}
    expected = app_engine.complete(QUESTION, "rlhf", **greedy)
    stream = app_engine.generate(QUESTION, "rlhf", **greedy)
    first = next(stream)
    assert app_engine.refresh_adapters(settings.path("adapters")) == {"rlhf": 3}
    assert first + "".join(stream) == expected  # the stream under way finished normally
    store = open_vote_store(settings)
    try:
        arena = Arena(app_engine, store, None, ArenaConfig.from_settings(settings))
        battle = arena.start("Is Kyoto better in autumn or spring?", session("battle"))
        record = store.battle(battle.battle_id)
        versions = {record.model_a: record.version_a, record.model_b: record.version_b}
        assert versions == {"rlhf": 3, "raft": None}
    finally:
        store.close()


def test_5_kto_trains_on_both_bad_votes_and_thumbs_down(home):
    from arena.store import open_vote_store
    from training.adapter_output import read_metadata
    from retraining import PUBLISHED, run_once

    settings = loop_settings(home, retrain={"method": "kto"})
    store = open_vote_store(settings)
    voter = session("kto")
    for i in range(3):
        question = f"kto question {i}: where should I stay in Lisbon?"
        messages = [{"role": "user", "content": question}]
        battle = store.create_battle(session=voter, question=question, model_a="raft", model_b="base",
                                     messages_a=messages, messages_b=messages)
        store.finish_battle(battle, "Anywhere.", "No idea.")
        store.record_vote(battle, "both_bad", voter)
    store.record_chat_feedback(session=voter, model="rlhf", prompt=QUESTION, completion="Walk.", liked=False,
                               message_index=1)
    store.close()
    status = run_once(settings)
    assert status["state"] == PUBLISHED, status.get("message")
    version = status["served_version"]
    metadata = read_metadata(settings.path("adapters") / "rlhf" / str(version))
    assert metadata["method"] == "kto"
    assert metadata["datasets"]["arena_negative"]["rows"] >= 1 and metadata["datasets"]["chat_feedback"]["rows"] >= 1
