"""`python -m evaluation report`: results.json + the arena votes -> report.md and plots.

This module writes the markdown; the numbers it states come from evaluation.summaries and the
figures from evaluation.report_plots.

Sections: what each number is, the models, the method x metric tables (mean and 95% bootstrap
interval over the golden questions), whether each method behaves as trained (verified quotes,
loops), the LLM judge (pairwise win rates under the swap rule, flip
rate, unparseable share, 1-10 grades), the Reddit-preference pairs (does each evaluator prefer
the upvoted reply?), the arena ratings, and every evaluator's agreement with both kinds of human
judgement side by side.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from evaluation.behaviour import BEHAVIOUR_LABELS, BEHAVIOUR_METRICS, LOOP_NGRAM, LOOP_TIMES
from evaluation.cache import RESULTS_FILE
from evaluation.config import EvaluationConfig
from evaluation.judge import PairwiseResult, summarize_pairwise
from evaluation.metrics import GOLDEN_METRICS
from evaluation.rag_metrics import RAG_METRICS
from evaluation.report_plots import plot_agreement, plot_reddit_preference, write_report_plots
from fsutils import write_text_atomic
from evaluation.summaries import (
    JUDGE_LABELS,
    LENGTH_LABEL,
    METRIC_LABELS,
    Estimate,
    RedditAgreement,
    arena_agreements,
    bootstrap_mean,
    evaluator_labels,
    human_votes,
    reddit_agreements,
)
from settings import Settings

REPORT_FILE = "report.md"
SECTION_TITLES = (
    "## What each number is", "## Models", "## Golden-answer metrics", "## RAG metrics", "## LLM judge",
    "## Reddit upvotes as human judgements", "## Human votes (arena)", "## Agreement with human judgements",
    "## Does each method behave as trained?",
)


def metric_definitions(embedder: str, support: float | None, relevance: float | None) -> list[tuple[str, str]]:
    """(label, what exactly is computed) for every number of the report."""
    ragas = "embedding approximation of the Ragas definition (the encoder's cosine instead of an LLM's yes/no)"
    return [
        ("BLEU", "sacrebleu's sentence BLEU against the reference, 0-100, exponential smoothing"),
        ("ROUGE-1 / ROUGE-2 / ROUGE-L", "F1 of unigram / bigram / longest-common-subsequence overlap "
                                        "(Google's rouge-score, Porter stemming), 0-1"),
        ("BERTScore-style P / R / F1", f"greedy cosine matching of contextual token embeddings from the last layer of "
                                       f"`{embedder}` (MiniLM in the local profile), no idf weighting, no baseline "
                                       "rescaling; not the bert-score package, which would load its own hub model"),
        ("Semantic sim.", f"cosine of the mean-pooled sentence embeddings of `{embedder}`"),
        ("Faithfulness", f"{ragas}: share of answer sentences with a retrieved sentence at cosine ≥ {support}"),
        ("Answer relevance", f"{ragas}: cosine of question and answer (Ragas embeds questions an LLM "
                             "generates from the answer)"),
        ("Context precision", f"{ragas}: rank-weighted precision of the retrieved chunks relevant to the reference "
                              f"(cosine ≥ {relevance})"),
        ("Context recall", f"{ragas}: share of reference sentences with a retrieved sentence at cosine ≥ {support}"),
        (JUDGE_LABELS["judge_pairwise"], "MT-Bench pairwise prompt in both orders; a verdict counts only when it "
                                         "survives the swap, else the comparison is a tie"),
        (JUDGE_LABELS["judge_pairwise_probability"], "P(first better) averaged over both orders (ties half): "
                                                     "the judge's preference with a constant position bias cancelled"),
        (JUDGE_LABELS["judge_grade"], "MT-Bench single-answer grade; the local judge's is G-Eval's "
                                      "probability-weighted mean over the grade tokens"),
        (LENGTH_LABEL, "a baseline, not a metric: prefers the longer text"),
        (BEHAVIOUR_LABELS["verified_quote"], "share of a model's answers given with retrieved documents that quote "
                                             "(##begin_quote## spans) and whose every quote is found verbatim (case and "
                                             "whitespace aside) in those documents, as the chat marks quotes verified"),
        (BEHAVIOUR_LABELS["loops"], f"share of answers in which one {LOOP_NGRAM}-gram of words and punctuation marks "
                                    f"occurs {LOOP_TIMES} or more times"),
        ("[a, b] after a number", "95% percentile-bootstrap interval"),
    ]


class ResultsMissingError(FileNotFoundError):
    """`report` ran before `run`."""


def _table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def load_results(config: EvaluationConfig) -> dict:
    path = config.directory / RESULTS_FILE
    if not path.exists():
        raise ResultsMissingError(f"no evaluation results at {path}; run `python -m evaluation run` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ResultsMissingError(f"evaluation results {path} are corrupt ({err}); rerun `python -m evaluation run`") from err


def write_report(settings: Settings, *, config: EvaluationConfig | None = None, store=None) -> Path:
    config = config or EvaluationConfig.from_settings(settings)
    results = load_results(config)
    out = config.directory
    models = [m["name"] for m in results["models"]]
    question_ids = [q["question_id"] for q in results["questions"]]
    scores = results["scores"]

    def estimate(model: str, metric: str) -> Estimate:
        values = [scores[model][qid].get(metric) for qid in question_ids if qid in scores.get(model, {})]
        return bootstrap_mean(values, config.bootstrap_rounds, config.seed)

    estimates = {m: {metric: estimate(m, metric) for metric in GOLDEN_METRICS + RAG_METRICS} for m in models}
    judge = results.get("judge") or {}
    pairwise = [PairwiseResult(**r) for r in judge.get("pairwise", [])]
    summary = summarize_pairwise(pairwise) if pairwise else None
    grades = {m: bootstrap_mean(list((judge.get("grades") or {}).get(m, {}).values()), config.bootstrap_rounds, config.seed)
              for m in models}
    ungraded = sum(v is None for m in models for v in (judge.get("grades") or {}).get(m, {}).values())
    humans = human_votes(settings, store)
    reddit = reddit_agreements(results.get("reddit_preference") or {}, config.bootstrap_rounds, config.seed)

    plots = write_report_plots(out, models, estimates, summary, humans)
    plots["reddit"] = plot_reddit_preference(out, reddit)
    thresholds = results.get("thresholds", {})
    lines = [
        "# Wayfarer evaluation report",
        "",
        f"Report written {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} from the run of "
        f"{results['created_at']}: **{len(question_ids)} golden questions** × **{len(models)} models** on base model "
        f"`{results['base_model']}`; greedy answers of at most {results['max_new_tokens']} new tokens. "
        f"Intervals are 95% percentile-bootstrap intervals of the mean over questions ({config.bootstrap_rounds} resamples).",
        "",
    ]
    for notice in results.get("notices", []):
        lines.append(f"> ⚠ {notice}")

    lines += ["", SECTION_TITLES[0], ""]
    lines.append(_table(["number", "what it is"],
                        metric_definitions(results["embedder"], thresholds.get("support"), thresholds.get("context_relevance"))))

    lines += ["", SECTION_TITLES[1], ""]
    lines.append(_table(
        ["model", "fingerprint", "retrieval", "mean answer length (chars)"],
        [[m["name"], f"`{m['fingerprint']}`", "yes (RAG)" if m["retrieval"] else "no",
          round(float(np.mean([len(results["answers"][m["name"]][q]["answer"]) for q in question_ids])))]
         for m in results["models"]],
    ))

    lines += ["", SECTION_TITLES[2], "",
              "Each answer against the golden reference (the held-out thread's best reply): BLEU (0-100), ROUGE F1, "
              f"BERTScore-style P/R/F1 (`{results['embedder']}` last-layer token embeddings, no idf) and semantic "
              "similarity (sentence-embedding cosine).", ""]
    lines.append(_table(["model"] + [METRIC_LABELS[k] for k in GOLDEN_METRICS],
                        [[m] + [estimates[m][k].format(2 if k == "bleu" else 3) for k in GOLDEN_METRICS] for m in models]))
    lines += ["", f"![golden-answer metrics]({plots['metrics'].name})"]

    lines += ["", SECTION_TITLES[3], "",
              "Embedding approximations of the Ragas definitions, computed locally with the encoder instead of an LLM "
              "(the `ragas` package needs an LLM through langchain and network access); see \"What each number is\". "
              "Models answering without retrieval have no context (—).", ""]
    lines.append(_table(["model"] + [METRIC_LABELS[k] for k in RAG_METRICS],
                        [[m] + [estimates[m][k].format() for k in RAG_METRICS] for m in models]))
    lines += ["", f"![RAG metrics]({plots['rag'].name})"]

    lines += ["", SECTION_TITLES[8], "",
              "Greedy answers to the golden questions. RAFT and RLHF are trained to quote their documents; a model "
              "answering without documents has no quote share (—).", ""]
    behaviour = {m: {k: estimate(m, k) for k in BEHAVIOUR_METRICS} for m in models}
    lines.append(_table(["model"] + [BEHAVIOUR_LABELS[k] for k in BEHAVIOUR_METRICS],
                        [[m] + [behaviour[m][k].format(2) for k in BEHAVIOUR_METRICS] for m in models]))

    lines += ["", SECTION_TITLES[4], ""]
    lines += _judge_lines(judge, summary, models, grades, ungraded, plots)

    lines += ["", SECTION_TITLES[5], ""]
    lines += _reddit_lines(results.get("reddit_preference") or {}, reddit, plots)

    lines += ["", SECTION_TITLES[6], ""]
    if humans.board is None:
        lines.append("No human votes yet: the arena has no usable votes, so there are no human ratings. "
                     "Vote in the app's Arena tab, then rerun `python -m evaluation report`.")
    else:
        from arena.leaderboard import Leaderboard

        lines.append(f"{humans.votes} arena votes (flagged sessions excluded); Bradley-Terry ratings with bootstrap "
                     "95% intervals, as on the Leaderboard tab.")
        lines += ["", _table(Leaderboard.TABLE_HEADERS, humans.board.table()), "",
                  f"![arena ratings]({plots['ratings'].relative_to(out).as_posix()}) "
                  f"![arena win rates]({plots['human_win_rate'].relative_to(out).as_posix()})"]

    lines += ["", SECTION_TITLES[7], ""]
    agreements = arena_agreements(models, estimates, summary, grades, humans)
    plots["agreement"] = plot_agreement(out, agreements, humans)
    lines.append("Each automatic evaluator against the two kinds of human judgement. **Reddit upvotes**: share of "
                 "Reddit-preference pairs on which it prefers the upvoted reply (ties ½; 0.5 is chance), with its "
                 "bootstrap interval. **Arena votes**: per model pair with a human preference (arena win rate ≠ 0.5), "
                 "does it prefer the same model (metrics: the higher mean; judge: its pairwise win rate); Kendall "
                 "tau-b (scipy) ranks the models by its score against the human Bradley-Terry ratings.")
    if humans.board is None:
        lines.append("\nNo arena votes yet: the arena columns stay empty until people vote.")
    rows = []
    for key, label in evaluator_labels():
        found = reddit.get(key)
        arena = agreements.get(label)
        rows.append([label,
                     found.estimate.format(2) if found and found.estimate.n else "—",
                     found.estimate.n if found else 0,
                     arena.pairs if arena else "—", _fmt(arena.rate) if arena else "—",
                     _fmt(arena.kendall_tau) if arena else "—"])
    lines += ["", _table(["evaluator", "Reddit: prefers the upvoted reply [95% CI]", "Reddit pairs",
                          "arena: model pairs compared", "arena: agreement rate", "arena: Kendall tau"], rows)]
    if humans.board is not None:
        lines += ["", f"![agreement with humans]({plots['agreement'].name})"]
        if not any(a.pairs for a in agreements.values()):
            lines.append("\nNo voted pair involves two evaluated models with a decided preference yet.")

    stats = dict(results.get("stats", {}))
    stages = stats.pop("stage_seconds", {}) or {}
    seconds = stats.pop("seconds", None)
    lines += ["", "## Run", ""]
    if seconds is not None:
        lines.append(f"The run took {seconds:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items())
                     + f") on {results.get('machine') or 'an unrecorded machine'}; cached work costs nothing on a rerun.")
    lines.append("Cache use in the run: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in stats.items()) + ".")
    return write_text_atomic(out / REPORT_FILE, "\n".join(lines) + "\n")


def _judge_lines(judge: Mapping, summary, models, grades, ungraded: int, plots) -> list[str]:
    lines = [f"Judge: `{judge.get('identity') or 'none'}` (MT-Bench prompts"
             + (", reference-guided with the golden answer" if judge.get("reference_guided") else "") + ")."]
    if judge.get("local"):
        model = str(judge.get("model") or "")
        caveat = ("It is the embedded **135M** model (SmolLM2-135M): a model this small is a weak judge, whose "
                  "preferences mostly reflect position and length bias." if "135m" in model.lower()
                  else "It is the contestants' own base model judging its own fine-tunes, not an independent judge.")
        lines.append(
            f"\n> ⚠ The judge is the local model **{model}**, read from its next-token probabilities: the verdict is "
            "the most probable of A, B, C after \"[[\", the grade the probability-weighted mean of the grade tokens "
            f"(G-Eval), so it always decides. {caveat} Set WAYFARER_JUDGE_BASE_URL (and _MODEL, _API_KEY) to judge "
            "with a strong model.")
    if judge.get("error"):
        lines.append(f"\n⚠ The judge failed: {judge['error']}")
    lines += ["", "### Pairwise, both orders (swap rule)", ""]
    if summary is None:
        lines.append("No pairwise judgments in this run (pairwise mode off, or fewer than two models).")
    else:
        against = (f" (every model against the baseline `{judge['baseline']}` only: MT-Bench's pairwise-baseline mode)"
                   if judge.get("baseline") in models else "")
        lines.append(
            f"{summary.comparisons} comparisons{against}, each judged with either answer first. A verdict counts only when it "
            f"survives the swap; otherwise the comparison is a tie. **Flip rate: {_fmt(summary.flip_rate)}** "
            f"({summary.flips} of {summary.comparisons}). **Unparseable share: {_fmt(summary.unparseable_share)}** "
            f"({summary.unparseable} of {2 * summary.comparisons} verdicts; counted as ties)."
        )
        rows = []
        for m in models:
            won = sum(summary.wins.get((m, o), 0) for o in models if o != m)
            lost = sum(summary.wins.get((o, m), 0) for o in models if o != m)
            tied = sum(summary.ties.get((m, o), 0) for o in models if o != m)
            rows.append([m, _fmt(summary.win_rate(m)), won, lost, tied])
        lines += ["", _table(["model", "win rate (ties ½)", "wins", "losses", "ties"], rows), ""]
        lines.append(_table(["row vs column"] + models,
                            [[a] + ["" if a == b else _fmt(summary.win_rate(a, b)) for b in models] for a in models]))
        lines += ["", f"![judge win rates]({plots['judge'].name})"]
    lines += ["", "### Single-answer grading (1-10)", ""]
    graded = sum(g.n for g in grades.values())
    if not graded and not ungraded:
        lines.append("No grades in this run (single mode off).")
    else:
        lines.append(f"{graded} answers graded; {ungraded} grades unparseable (left out).")
        lines += ["", _table(["model", "mean grade [95% CI]", "graded"], [[m, grades[m].format(2), grades[m].n] for m in models])]
    return lines


def _reddit_lines(section: Mapping, reddit: Mapping[str, RedditAgreement], plots) -> list[str]:
    pairs = section.get("pairs", [])
    if not pairs:
        return [f"No Reddit-preference pairs: {section.get('note') or 'none were built'}."]
    threads = len({p["thread_id"] for p in pairs})
    with_reference = sum(p["reference"] for p in pairs)
    lines = [
        f"**{len(pairs)} pairs** of replies from {threads} golden (held-out) threads: two top-level replies to the "
        f"same post, both above the answer length floor, the upvoted one with at least "
        f"{section.get('min_score_ratio', 2):g}× the other's score (every such pair in a thread). Upvotes are human "
        "judgements that need no arena votes. Reference-based metrics score each reply against the thread's "
        f"best other reply ({with_reference} pairs have one); answer relevance against the question; faithfulness "
        "against the documents retrieved for the question" + ("" if section.get("retrieval") else
                                                             " (retrieval was unavailable: not measured)")
        + f"; the judge saw {section.get('judged_pairs', 0)} pairs. Context precision and recall score the "
        "retrieval, which is the same for both replies: they do not apply.",
    ]
    if section.get("judge_error"):
        lines.append(f"\n⚠ The judge failed on these pairs: {section['judge_error']}")
    rows = []
    for key, label in evaluator_labels():
        if key in ("context_precision", "context_recall"):
            rows.append([label, "n/a (same for both replies)", 0, "—"])
            continue
        found = reddit.get(key)
        rows.append([label, found.estimate.format(2) if found else "—", found.estimate.n if found else 0,
                     found.ties if found else "—"])
    lines += ["", _table(["evaluator", "prefers the upvoted reply [95% CI]", "pairs", "ties"], rows),
              "", f"![Reddit-preference agreement]({plots['reddit'].name})"]
    return lines
