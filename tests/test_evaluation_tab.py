"""The study end to end: the real pipeline (demo corpus -> index -> datasets -> two tiny adapters
-> evaluate) writes the report, the Evaluation tab shows it with the loss curves in Chromium,
and its button reruns the evaluation in the background (everything cached by then).

One pipeline run serves every test here: it is the costly part (a few minutes on 2 cores).
"""

from __future__ import annotations

import re
import shutil

import pytest

from settings import apply_runtime, load_settings
from tests.conftest import MODELS_CACHE, serve_app

TINY_RUN = dict(grad_accumulation=1, logging_steps=1, warmup_ratio=0.0, lr_scheduler="constant", batch_size=1)
OVERRIDES = {  # the training budgets of tests/test_training.py, qlora and raft only
    "runtime": {"torch_threads": 2},
    "model": {"adapters": ["qlora", "raft"]},
    "retrieval": {"chunk_tokens": 48, "chunk_overlap_tokens": 8, "top_k": 1},  # short RAG prompts
    "data": {"datasets": {"raft_distractors": 1}},
    "training": {
        "seed": 7, "compute_dtype": "float32",
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "qlora": {**TINY_RUN, "learning_rate": 3e-3, "max_steps": 3, "eval_steps": 3, "max_length": 192,
                  "max_train_rows": 6, "max_eval_rows": 2},
        "raft": {**TINY_RUN, "learning_rate": 3e-3, "max_steps": 2, "eval_steps": 2, "max_length": 480,
                 "max_train_rows": 3, "max_eval_rows": 1},
    },
    # The report's every section on a small budget; the judge sees 40 Reddit pairs (the done-when
    # floor), its replies clipped short so that 80 + prompts stay cheap on a CPU.
    "evaluation": {"max_questions": 2, "max_new_tokens": 12, "bootstrap_rounds": 200,
                   "judge": {"max_answer_chars": 160, "batch_size": 8},
                   "reddit_preference": {"judge_max_pairs": 40}},
}
MIN_PAIRS = 40


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Settings whose home went through the whole pipeline but RLHF; the pipeline's outcome."""
    from training.pipeline import run_pipeline

    home = tmp_path_factory.mktemp("study-home")
    settings = load_settings(profile="local", overrides={"paths": {"home": str(home), "models": str(MODELS_CACHE)},
                                                          **OVERRIDES})
    apply_runtime(settings)
    outcome = run_pipeline(settings, skip={"rlhf"}, log=lambda _: None)
    return settings, outcome


@pytest.fixture(scope="module")
def report_text(study):
    from evaluation.config import EvaluationConfig
    from evaluation.report import REPORT_FILE

    settings, _ = study
    return (EvaluationConfig.from_settings(settings).directory / REPORT_FILE).read_text()


def test_the_pipeline_ends_with_the_evaluation_and_skips_it_when_current(study):
    from training.pipeline import run_pipeline

    settings, outcome = study
    assert [name for name, _ in outcome.ran] == ["ingest", "index", "build", "qlora", "raft", "evaluate"]
    again = run_pipeline(settings, skip={"rlhf"}, log=lambda _: None)
    assert again.ran == [] and ("evaluate", "current (same inputs and settings)") in again.skipped
    # A changed evaluation setting reruns the step (its cache answers what did not change).
    changed = settings.with_overrides({"evaluation": {"support_threshold": 0.5}})
    assert [name for name, _ in run_pipeline(changed, skip={"rlhf"}, log=lambda _: None).ran] == ["evaluate"]


def test_qlora_and_raft_train_side_by_side_on_a_cpu(study):
    """The local profile trains the two SFT adapters at once, each in its own process, and each
    process trains its own method: both adapters exist, made from their own datasets."""
    import json

    from modeling.adapters import current_adapter_dir
    from training.adapter_output import read_metadata
    from training.pipeline import STATE_FILE

    settings, _ = study
    state = json.loads((settings.path("home") / STATE_FILE).read_text())
    assert state["qlora"]["side_by_side_with"] == ["raft"] and state["raft"]["side_by_side_with"] == ["qlora"]
    for name, dataset in (("qlora", "sft"), ("raft", "raft")):
        metadata = read_metadata(current_adapter_dir(settings.path("adapters") / name))
        assert metadata["method"] == name and list(metadata["datasets"]) == [dataset], metadata["datasets"]
        assert metadata["precision"]["attention"] == "sdpa"  # training.attention, recorded


def _reddit_rows(report: str) -> dict[str, list[str]]:
    section = report.split("## Reddit upvotes as human judgements")[1].split("\n## ")[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("evaluator", "---"):
            rows[cells[0]] = cells[1:]
    return rows


def test_the_reddit_preference_table_covers_every_metric_with_intervals_from_40_pairs(report_text):
    from evaluation.summaries import evaluator_labels

    rows = _reddit_rows(report_text)
    assert set(rows) == {label for _, label in evaluator_labels()}
    for label, (share, pairs, _ties) in rows.items():
        if label in ("Context precision", "Context recall"):
            assert share.startswith("n/a")  # they score the retrieval, the same for both replies
            continue
        assert int(pairs) >= MIN_PAIRS, label
        assert re.fullmatch(r"[01]\.\d\d \[[01]\.\d\d, [01]\.\d\d\]", share), (label, share)


def test_the_report_says_what_each_number_is_and_that_the_judge_is_weak(report_text):
    definitions = report_text.split("## What each number is")[1].split("\n## ")[0]
    assert "MiniLM" in definitions and "no idf" in definitions
    assert "embedding approximation of the Ragas definition" in definitions
    judge = report_text.split("## LLM judge")[1].split("\n## ")[0]
    assert "SmolLM2-135M" in judge and "weak judge" in judge
    assert "Unparseable share: 0.00" in judge


@pytest.mark.browser
def test_the_evaluation_tab_shows_the_report_and_the_loss_curves(study):
    import playwright.sync_api as playwright_api

    from chatbot import ChatEngine
    from chatbot.rag import RagChat

    settings, _ = study
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    engine = ChatEngine.from_settings(settings)
    try:
        with serve_app(settings, engine, rag=RagChat.from_settings(engine, settings)) as url, \
                playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium,
                                                 args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page()
                page.goto(url)
                page.get_by_role("tab", name="Evaluation").click()
                expect = playwright_api.expect
                expect(page.get_by_role("heading", name="Wayfarer evaluation report")).to_be_visible(timeout=60_000)
                expect(page.get_by_role("heading", name="Reddit upvotes as human judgements")).to_be_visible()
                for name in ("qlora", "raft"):  # matplotlib figures, drawn from each adapter's log
                    expect(page.locator(f"#loss-curve-{name} img")).to_be_visible(timeout=30_000)
                # The button reruns in the background; every answer and verdict is cached by now.
                page.get_by_role("button", name="Run the evaluation").click()
                expect(page.get_by_text(re.compile(r"Evaluation finished: .* answers 0 generated"))).to_be_visible(
                    timeout=300_000)
            finally:
                browser.close()
    finally:
        engine.close()
