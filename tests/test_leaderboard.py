"""Leaderboard maths against known strengths and a reference fit (with and without the prior),
honest intervals at low counts, and the dataset export."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from arena.export import export_votes
from arena.leaderboard import compute_leaderboard, simulate_votes, write_plots
from arena.sessions import hash_session
from arena.store import SQLiteVoteStore, VoteRow

from tests.conftest import REPO, arena_config

TRUE = {"m0": 1000.0, "m1": 1150.0, "m2": 900.0, "m3": 1250.0, "m4": 1050.0}


def simulate(n: int, seed: int = 0, spacing_s: float = 1.0) -> list[VoteRow]:
    """Battles drawn from the Bradley-Terry model with the TRUE ratings, from n/10 voters (about
    10 votes each, far below the abuse threshold)."""
    return simulate_votes(TRUE, n, seed=seed, spacing_s=spacing_s, sessions=max(1, n // 10))


def reference_ratings(votes: list[VoteRow], prior_ties: float = 0.0) -> dict[str, float]:
    """The Chatbot Arena's computation, written plainly: duplicated rows + sklearn logistic
    regression; the prior as what it claims to be, `prior_ties` tie rows of every model against
    an average model (a player of strength 0, so it has no column)."""
    from sklearn.linear_model import LogisticRegression

    models = sorted({v.model_a for v in votes} | {v.model_b for v in votes})
    index = {m: i for i, m in enumerate(models)}
    X = np.zeros((len(votes), len(models)))
    for row, v in enumerate(votes):
        X[row, index[v.model_a]] = math.log(10)
        X[row, index[v.model_b]] = -math.log(10)
    X = np.concatenate([X, X])
    Y = np.zeros(len(X))
    Y[: len(votes)] = [v.vote in ("model_a", "tie", "both_bad") for v in votes]  # ties: win in one copy
    Y[len(votes):] = [v.vote == "model_a" for v in votes]  # ...and lose in the other
    weight = np.ones(len(X))
    if prior_ties:
        virtual = np.eye(len(models)) * math.log(10)
        X = np.concatenate([X, virtual, virtual])  # each virtual tie: a win in one copy, a loss in the other
        Y = np.concatenate([Y, np.ones(len(models)), np.zeros(len(models))])
        weight = np.concatenate([weight, np.full(2 * len(models), prior_ties)])
    fit = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=10000).fit(X, Y, sample_weight=weight)
    ratings = 400 * fit.coef_[0]
    ratings += 1000 - ratings.mean()
    return dict(zip(models, ratings))


def centred(true: dict) -> dict:
    shift = 1000 - np.mean(list(true.values()))
    return {m: r + shift for m, r in true.items()}


@pytest.mark.parametrize("intervals", ["laplace", "bootstrap"])
def test_bradley_terry_recovers_known_strengths_with_intervals_containing_them(intervals):
    board = compute_leaderboard(simulate(20000), intervals=intervals, bootstrap_rounds=100)
    assert board.models == sorted(TRUE, key=lambda m: -TRUE[m])
    truth = centred(TRUE)
    for row in board.rows:
        assert row.lower <= truth[row.model] <= row.upper, row
        assert row.upper - row.lower < 40  # 20k battles pin ratings to a few points
        assert abs(row.rating - truth[row.model]) < 20
        assert not row.provisional
    assert np.mean([r.rating for r in board.rows]) == pytest.approx(1000)
    assert board.votes_excluded == 0 and board.flagged_votes == 0


@pytest.mark.parametrize("prior_ties", [0.0, 2.0, 10.0])
def test_ratings_agree_with_the_reference_logistic_regression_including_ties_and_the_prior(prior_ties):
    votes = simulate(3000, seed=3)
    votes = [v if i % 5 else dataclasses.replace(v, vote=("tie", "both_bad")[i % 2]) for i, v in enumerate(votes)]
    assert sum(v.vote in ("tie", "both_bad") for v in votes) == 600
    ours = {r.model: r.rating for r in compute_leaderboard(votes, prior_ties=prior_ties).rows}
    reference = reference_ratings(votes, prior_ties)
    for model in TRUE:
        assert ours[model] == pytest.approx(reference[model], abs=0.05)


def test_few_votes_the_prior_keeps_ratings_finite_and_matches_the_reference():
    votes = [VoteRow(f"{i:032x}", f"{i:064x}", "x", "y", "model_a", float(i), 0) for i in range(3)]
    ours = {r.model: r.rating for r in compute_leaderboard(votes).rows}
    reference = reference_ratings(votes, arena_config().prior_ties)
    assert ours == pytest.approx(reference, abs=0.05)
    assert 0 < ours["x"] - ours["y"] < 400  # three wins: ahead, not infinitely


@pytest.mark.parametrize("intervals", ["laplace", "bootstrap"])
def test_one_vote_marks_both_models_provisional_with_a_wide_interval(intervals):
    """The done-when test of the honest leaderboard: the old board put the winner of a single
    vote at 2044 and the loser at -44, each with a 95% interval of zero width."""
    board = compute_leaderboard([VoteRow("1" * 32, "s" * 64, "x", "y", "model_a", 1.0, 0)], intervals=intervals)
    x, y = board.rows
    assert (x.model, y.model) == ("x", "y") and x.rating > y.rating
    assert x.rating - y.rating < 400  # one vote is weak evidence, not a 2000-point gap
    for row in board.rows:
        assert row.provisional and row.battles == 1
        assert row.upper - row.lower > 300, row  # several hundred points: we know very little
        assert row.lower < row.rating < row.upper
    assert x.lower < y.upper  # the intervals overlap: the order is not established
    assert [r[-1] for r in board.table()] == ["provisional", "provisional"]
    assert "provisional" in board.format_table()


def test_intervals_narrow_and_provisional_lifts_as_votes_come_in():
    rng = np.random.default_rng(11)
    widths = {}
    for n in (1, 10, 100, 1000):
        wins = rng.random(n) < 0.64  # x is about 100 points stronger
        votes = [VoteRow(f"{i:032x}", f"{i:064x}", "x", "y", "model_a" if w else "model_b", float(i), 0)
                 for i, w in enumerate(wins)]
        board = compute_leaderboard(votes, provisional_battles=30)
        widths[n] = max(r.upper - r.lower for r in board.rows)
        assert all(r.provisional == (n < 30) for r in board.rows)
    assert widths[1] > widths[10] > widths[100] > widths[1000]
    assert widths[1000] < 60


def test_ties_count_as_half_a_win_for_each_side():
    row = lambda i, vote: VoteRow(f"{i:032x}", "s" * 64, "x", "y", vote, float(i), 0)
    only_ties = compute_leaderboard([row(i, "tie") for i in range(10)])
    assert only_ties.rows[0].rating == pytest.approx(only_ties.rows[1].rating)
    # 2 wins + 2 ties for x, 0 wins for y: x scores 3 of 4, odds 3:1 -> 400*log10(3) apart
    # (by maximum likelihood; the prior would pull the gap in).
    board = compute_leaderboard(
        [row(0, "model_a"), row(1, "model_a"), row(2, "tie"), row(3, "both_bad")], prior_ties=0
    )
    gap = board.rows[0].rating - board.rows[1].rating
    assert board.rows[0].model == "x" and gap == pytest.approx(400 * math.log10(3), abs=0.01)
    assert (board.rows[0].wins, board.rows[0].losses, board.rows[0].ties, board.rows[0].battles) == (2, 0, 2, 4)
    assert board.win_rate[0, 1] == 1.0 and board.pair_battles[0, 1] == 4


def test_online_elo_follows_the_k4_update_in_vote_order():
    votes = [VoteRow("1" * 32, "s" * 64, "x", "y", "model_a", 1.0, 0), VoteRow("2" * 32, "s" * 64, "y", "x", "tie", 2.0, 0)]
    board = compute_leaderboard(votes)
    elo = {r.model: r.elo for r in board.rows}
    x, y = 1000 + 4 * 0.5, 1000 - 4 * 0.5  # first vote: expected 0.5, x wins
    expected_y = 1 / (1 + 10 ** ((x - y) / 400))
    assert elo["x"] == pytest.approx(x - 4 * (0.5 - expected_y))
    assert elo["y"] == pytest.approx(y + 4 * (0.5 - expected_y))


def test_flagged_sessions_are_left_out_of_the_ratings():
    honest = simulate(2000, seed=5, spacing_s=60.0)  # one vote a minute
    # A bot voting 1200 times in 20 minutes for the weakest model.
    bot = [VoteRow(f"b{i:031x}", "b" * 64, "m2", "m3", "model_a", 1000.0 + i, 0) for i in range(1200)]
    board = compute_leaderboard(honest + bot, abuse_votes=1000, abuse_minutes=30)
    assert board.votes_excluded == 1200 and board.flagged_sessions == 1 and board.votes_used == 2000
    assert board.flagged_votes == 1200 and board.models[0] == "m3" and board.models[-1] == "m2"
    included = compute_leaderboard(honest + bot, abuse_votes=1000, abuse_minutes=30, include_flagged=True)
    assert included.votes_used == 3200 and included.votes_excluded == 0 and included.flagged_votes == 1200


def test_a_flagged_client_address_flags_its_votes_from_every_session():
    honest = simulate(500, seed=6, spacing_s=60.0)
    # One address, a fresh session per vote: no session is flagged, the address is.
    bot = [VoteRow(f"b{i:031x}", f"{i:064x}", "m2", "m3", "model_a", 1000.0 + 30 * i, 0, "c" * 64) for i in range(150)]
    board = compute_leaderboard(honest + bot, abuse_votes=100, abuse_minutes=24 * 60)
    assert (board.flagged_sessions, board.flagged_clients, board.votes_excluded) == (0, 1, 150)
    assert board.models[-1] == "m2"


def test_100k_votes_with_100_bootstraps_give_a_board_and_plots(tmp_path):
    # How long this takes is measured by bench/arena_bench.py, not here.
    votes = simulate(100_000, seed=7)
    board = compute_leaderboard(votes, intervals="bootstrap", bootstrap_rounds=100)
    assert board.votes_used == 100_000 and board.models[0] == max(TRUE, key=TRUE.get)
    ratings, heatmap = write_plots(board, tmp_path / "plots")
    for path in (ratings, heatmap):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


# --------------------------------------------------------------------------------- export
def fill_store(store: SQLiteVoteStore) -> None:
    def battle(who, question, vote, answers=("answer A", "answer B"), models=("raft", "base")):
        battle_id = store.create_battle(
            session=hash_session("t", who),
            question=question,
            model_a=models[0],
            model_b=models[1],
            messages_a=[{"role": "system", "content": "sys"}, {"role": "user", "content": f"DOCS + {question}"}],
            messages_b=[{"role": "system", "content": "sys"}, {"role": "user", "content": f"DOCS + {question}"}],
            doc_ids=["t1-0"],
        )
        store.finish_battle(battle_id, *answers)
        if vote:
            store.record_vote(battle_id, vote, hash_session("t", who))
        return battle_id

    battle("u1", "Where to eat in Lisbon?", "model_a", ("Try Alfama tascas.", "Eat anywhere."))
    battle("u2", "Best time for Iceland?", "model_b", ("Winter only.", "Summer for hiking, winter for auroras."))
    battle("u3", "Is Tokyo expensive?", "tie")
    battle("u4", "Visa for Vietnam?", "both_bad", ("No idea.", "Bananas."))
    battle("u5", "Unvoted question?", None)
    # A follow-up where each side saw its own earlier answer: no shared prompt.
    first = battle("u6", "Plan 3 days in Rome", None, ("Day 1: Colosseum.", "Day 1: Vatican."))
    record = store.battle(first)
    follow = store.create_battle(
        session=hash_session("t", "u6"), question="And day 4?", model_a="raft", model_b="base",
        messages_a=[{"role": "user", "content": "Plan 3 days in Rome"}, {"role": "assistant", "content": "Day 1: Colosseum."}, {"role": "user", "content": "And day 4?"}],
        messages_b=[{"role": "user", "content": "Plan 3 days in Rome"}, {"role": "assistant", "content": "Day 1: Vatican."}, {"role": "user", "content": "And day 4?"}],
        conversation_id=record.conversation_id, turn=1,
    )
    store.finish_battle(follow, "Ostia.", "Tivoli.")
    store.record_vote(follow, "model_a", hash_session("t", "u6"))


def test_export_writes_dpo_pairs_skips_ties_and_keeps_both_bad_as_negatives(tmp_path, settings):
    from datasets import DatasetDict, load_from_disk
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    from modeling.base_model import ModelConfig, prepare_checkpoint

    store = SQLiteVoteStore(tmp_path / "votes.sqlite3")
    fill_store(store)
    config = arena_config(export_validation_fraction=0.0)
    report = export_votes(store, config, tmp_path / "datasets")
    assert report.pairs == {"train": 2, "validation": 0} and report.ties_skipped == 1
    assert report.different_context_skipped == 1 and report.negatives["train"] == 2

    preference = load_from_disk(str(tmp_path / "datasets" / "arena_preference"))
    assert isinstance(preference, DatasetDict) and set(preference) == {"train", "validation"}
    assert preference["train"].column_names == ["prompt", "chosen", "rejected", "thread_id", "doc_ids"]
    rows = {r["prompt"][0]["content"]: r for r in preference["train"]}
    lisbon = rows["DOCS + Where to eat in Lisbon?"]
    assert lisbon["prompt"] == [{"role": "user", "content": "DOCS + Where to eat in Lisbon?"}]  # no system message
    assert lisbon["doc_ids"] == ["t1-0"]  # ids only (as stored before schema 2): the prompt is the stored message
    assert lisbon["chosen"] == [{"role": "assistant", "content": "Try Alfama tascas."}]
    assert lisbon["rejected"] == [{"role": "assistant", "content": "Eat anywhere."}]
    iceland = rows["DOCS + Best time for Iceland?"]
    assert iceland["chosen"][0]["content"].startswith("Summer") and iceland["thread_id"].startswith("arena-")

    negative = load_from_disk(str(tmp_path / "datasets" / "arena_negative"))["train"]
    assert negative.column_names == ["prompt", "completion", "label", "thread_id", "doc_ids"]
    assert sorted(r["completion"][0]["content"] for r in negative) == ["Bananas.", "No idea."]
    assert not any(negative["label"])

    # The format trl's DPOTrainer takes: conversational, and its chat templating accepts it.
    # The configured base model's tokenizer (not whichever folder the model cache lists first).
    tokenizer = AutoTokenizer.from_pretrained(prepare_checkpoint(ModelConfig.from_settings(settings), settings.path("models")))
    example = preference["train"][0]
    assert is_conversational(example)
    templated = apply_chat_template({k: example[k] for k in ("prompt", "chosen", "rejected")}, tokenizer)
    assert "Alfama" in templated["chosen"] + templated["rejected"] or "Summer" in templated["chosen"]
    assert templated["prompt"].rstrip().endswith("assistant")


def test_cli_exports_and_prints_the_leaderboard(tmp_path):
    store = SQLiteVoteStore(tmp_path / "votes.sqlite3")
    fill_store(store)
    env = dict(os.environ, WAYFARER__PATHS__HOME=str(tmp_path), WAYFARER_PROFILE="local")
    export = subprocess.run([sys.executable, "-m", "arena", "export"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert export.returncode == 0, export.stderr
    assert "preference pairs: 2" in export.stdout and "1 ties" in export.stdout
    assert (tmp_path / "data" / "datasets" / "arena_preference" / "dataset_dict.json").exists()
    board = subprocess.run([sys.executable, "-m", "arena", "leaderboard", "--rounds", "20"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert board.returncode == 0, board.stderr
    lines = board.stdout.splitlines()
    assert lines[0].split()[:2] == ["rank", "model"] and {lines[1].split()[1], lines[2].split()[1]} == {"raft", "base"}
    assert (tmp_path / "leaderboard" / "ratings.png").exists() and (tmp_path / "leaderboard" / "win_rate.png").exists()
