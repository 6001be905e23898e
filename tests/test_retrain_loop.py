"""The closed loop on the real embedded model with a tiny budget: votes -> loop -> new rlhf version.

Model-free checks first (versions, the gate, the store's version columns, the leaderboard), then
one module that trains for real, in order: the loop waits for votes, trains and publishes
version 1 on SQLite; a candidate that must regress is rejected and version 1 keeps serving; two
app.py processes share one PostgreSQL, votes come in through both, the one running the loop
in-app is killed with SIGKILL during retraining, the served version stays intact, its next
start recovers and publishes, and the other app swaps the new version in while a chat stream
is under way, which finishes normally; the next battle records the new version. Last, the
same hot swap on an engine in this process, and KTO.
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
from gradio_client import Client

from settings import apply_runtime, load_settings
from tests.conftest import REPO, app_process, make_lora_adapter, settings_env
from tests.test_training import training_overrides

QUESTION = [{"role": "user", "content": "What is the cheapest way from Narita airport to Shinjuku?"}]
# Tiny evaluation budget: two golden questions, short answers, two Reddit pairs.
RETRAIN = {"min_new_votes": 3, "max_regression": 1.0, "eval_questions": 2, "eval_max_new_tokens": 8,
           "reddit_pairs": 2, "max_steps": 1, "method": "dpo", "poll_s": 1, "in_app": False}


def loop_overrides(home, **extra) -> dict:
    """The test_training overrides (tiny TRAINING budget) with the loop's tiny budget."""
    retrain = {**RETRAIN, **(extra.pop("retrain", None) or {})}
    arena = {"retrain": retrain, "sampling_weights": {"base": 0}, "use_retrieval": False, **(extra.pop("arena", None) or {})}
    # float32 weights, not `auto`: its timed choice could differ between the app processes here.
    model = {"adapters": ["raft", "rlhf"], "adapter_poll_s": 0, "quantization": "none", **(extra.pop("model", None) or {})}
    return training_overrides(Path(home), arena=arena, model=model,
                              evaluation={"judge": {"local_model": "base", "batch_size": 4, "max_prompt_tokens": 1024}},
                              **extra)


def loop_settings(home, **extra):
    settings = load_settings(profile="local", overrides=loop_overrides(home, **extra))
    apply_runtime(settings)
    return settings


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


def test_the_loop_command_waits_for_votes_under_both_names(tmp_path):
    env = {**os.environ, "WAYFARER__PATHS__HOME": str(tmp_path)}
    for command in (["retraining"], ["training", "loop"]):
        done = subprocess.run([sys.executable, "-m", *command, "--once"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "waiting: 0 of 50 new usable votes" in done.stdout, done.stdout
    assert json.loads((tmp_path / "retrain_status.json").read_text())["state"] == "waiting"


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
    # The swap takes the model lock between two decode steps, so any answer of more than a few
    # tokens is still decoding then; the draining slot below says it was.
    greedy = {"temperature": 0, "max_new_tokens": 300}
    assert engine.adapter_versions["rlhf"] == 1
    expected_v1 = engine.complete(QUESTION, "rlhf", **greedy)
    assert len(engine.tokenizer(expected_v1)["input_ids"]) > 8, expected_v1
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


CHAT_QUESTION = "Plan two weeks in Japan for me, day by day, with trains, food and costs."
SWAP_LINE = "[wayfarer] rlhf version 3 serves new requests"


def _vote_through_the_app(url: str, count: int) -> None:
    """`count` battles in the app's Arena tab, each from a fresh client (a new session) with a vote for A."""
    for i in range(count):
        client = Client(url, verbose=False)
        client.predict(f"Is the JR Pass worth it for trip {i}?", api_name="/arena_send")
        client.predict(api_name="/arena_vote_a")


def _chat(url: str, max_new_tokens: int = 1024) -> tuple[str, float, float]:
    """A greedy rlhf answer streamed from the app's /chat: (final text, first update at, end at)."""
    job = Client(url, verbose=False).submit(CHAT_QUESTION, "rlhf", 0.0, max_new_tokens, False, api_name="/chat")
    first = None
    for _ in job:
        first = first or time.monotonic()
    return job.result(), first, time.monotonic()


def test_3_two_apps_on_postgres_votes_in_the_app_kill_9_of_the_app_during_retraining_and_the_swap_mid_stream(
        home, postgres_dsn, tmp_path):
    """Two app.py processes on one PostgreSQL: A runs the loop in-app, B serves and polls the
    adapters. Votes come in through both apps; A is killed with SIGKILL while it trains, which
    leaves version 1 serving in B; A's next start recovers and publishes version 3, which B swaps
    in while a chat stream on version 1 is under way; that stream ends normally, with version
    1's answer, and B's next battle records version 3."""
    import threading

    from retraining import PUBLISHED, RUNNING, read_status

    settings = loop_settings(home)
    served_files = sorted(p.name for p in (settings.path("adapters") / "rlhf" / "1").iterdir())
    # One thread each: the two apps share the two cores. Whole sections, as JSON: a section's
    # variable replaces what a WAYFARER__SECTION__KEY variable of that section would have said.
    shared = {"arena": {"vote_store": "postgres"}, "runtime": {"torch_threads": 1}}
    a_env = settings_env(loop_overrides(home, retrain={"in_app": True, "min_new_votes": 4}, **shared))
    b_env = settings_env(loop_overrides(home, model={"adapter_poll_s": 0.25}, **shared))
    a_env["WAYFARER_VOTES_DSN"] = b_env["WAYFARER_VOTES_DSN"] = postgres_dsn
    with app_process(b_env, tmp_path / "b.log") as (b_url, _):
        expected, *_ = _chat(b_url)  # version 1's greedy answer, B otherwise idle (as during the swap below)
        with app_process(a_env, tmp_path / "a1.log") as (a_url, a_first):
            _vote_through_the_app(b_url, 2)
            _vote_through_the_app(a_url, 2)  # the 4th vote starts A's loop
            assert _wait_for(lambda: read_status(settings).get("step") == "train" or a_first.poll() is not None, 300)
            time.sleep(3)  # into the trainer
            assert a_first.poll() is None, (tmp_path / "a1.log").read_text()[-3000:]
            os.kill(a_first.pid, signal.SIGKILL)
            a_first.wait(timeout=30)
        killed = read_status(settings)
        assert killed["state"] == RUNNING and killed["candidate_version"] == 3
        assert _current(settings) == "1"
        assert sorted(p.name for p in (settings.path("adapters") / "rlhf" / "1").iterdir()) == served_files
        assert _chat(b_url, 16)[0].strip()  # B serves on

        streams, stop = [], threading.Event()

        def chat_until_stopped():  # back to back, so that one is under way whenever B swaps
            while not stop.is_set():
                streams.append(_chat(b_url))

        with app_process(a_env, tmp_path / "a2.log"):  # A's next start: its loop recovers and runs again
            assert _wait_for(lambda: read_status(settings).get("step") in ("evaluate", "publish"), 600)
            chatter = threading.Thread(target=chat_until_stopped, daemon=True)
            chatter.start()
            assert _wait_for(lambda: SWAP_LINE in (tmp_path / "b.log").read_text(), 300), read_status(settings)["log"][-3:]
            swapped_at = time.monotonic()
            stop.set()
            chatter.join(timeout=300)
        status = read_status(settings)
        # A's loop goes on polling after it published (state waiting again): its last run says what happened.
        assert status["last_run"]["outcome"] == PUBLISHED and _current(settings) == "3", status.get("message")
        assert status["served_version"] == 3
        assert status["interrupted_runs"] == 1 and any(e["step"] == "recover" for e in status["log"])
        assert status["last_run"]["new_votes"] == 4  # the votes of both apps, from PostgreSQL
        assert not list((settings.path("adapters") / "rlhf").glob(".*.new-*"))

        # Streaming before B's log said so (0.3 s: more than this test's polling lag): admitted on version 1,
        # since the line is printed at the swap. Streams are long (up to 1,024 tokens) and back to back,
        # so the swap lands in the 0.3 s margin or between two streams only rarely.
        under_way = [text for text, first, end in streams if first < swapped_at - 0.3 and end > swapped_at]
        assert under_way, (f"no chat stream was under way when B swapped: streams (start, end) relative to the swap "
                           f"{[(round(f - swapped_at, 1), round(e - swapped_at, 1)) for _, f, e in streams]}")
        assert under_way[0].split() == expected.split()  # finished normally, on version 1

        Client(b_url, verbose=False).predict("Is Kyoto better in autumn or spring?", api_name="/arena_send")
    from arena.store import PostgresVoteStore

    store = PostgresVoteStore(postgres_dsn)
    try:
        last = store.battles()[-1]
        assert {last.model_a: last.version_a, last.model_b: last.version_b} == {"rlhf": 3, "raft": None}
    finally:
        store.close()


def test_4_the_app_engine_swaps_in_the_new_version_mid_stream_and_the_next_battle_records_it(home, app_engine):
    from arena.battle import Arena
    from arena.config import ArenaConfig
    from arena.store import open_vote_store

    settings = loop_settings(home)
    assert app_engine.adapter_versions["rlhf"] == 1
    question = [{"role": "user", "content": CHAT_QUESTION}]  # asks for a long answer
    greedy = {"temperature": 0, "max_new_tokens": 300}
    expected = app_engine.complete(question, "rlhf", **greedy)
    assert len(app_engine.tokenizer(expected)["input_ids"]) > 8, expected
    stream = app_engine.generate(question, "rlhf", **greedy)
    first = next(stream)
    assert app_engine.refresh_adapters(settings.path("adapters")) == {"rlhf": 3}
    # Version 1's slot ("rlhf") is still attached after the swap only while a row runs on it:
    # the stream was under way at the swap (whatever the trained model's answer length).
    assert app_engine.loaded_slots == ["raft", "rlhf", "rlhf@3"], app_engine.loaded_slots
    assert first + "".join(stream) == expected  # the stream under way finished normally
    # and its old version leaves with its last row (dropped right after that step, on the worker thread)
    assert _wait_for(lambda: app_engine.loaded_slots == ["raft", "rlhf@3"], 10), app_engine.loaded_slots
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
