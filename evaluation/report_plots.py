"""The evaluation report's figures, written as PNG files next to report.md: metric bars with their
intervals, the judge's win-rate heatmap, the arena's plots, agreement with human votes and with
Reddit upvotes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from evaluation.rag_metrics import RAG_METRICS
from evaluation.agreement import Agreement
from evaluation.summaries import METRIC_LABELS, HumanVotes, RedditAgreement, evaluator_labels

PLOT_METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "bertscore_f1", "semantic_similarity")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def _saved(plt, fig, ax, path: Path, title: str) -> Path:
    """Title the figure, write it to `path` and free it."""
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _bars(path: Path, models, metrics, estimates, title: str, scale: Mapping[str, float]) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(metrics) + 2), 4))
    width = 0.8 / max(1, len(models))
    x = np.arange(len(metrics))
    for i, model in enumerate(models):
        means, errors = [], [[], []]
        for metric in metrics:
            e, factor = estimates[model][metric], scale.get(metric, 1.0)
            mean = (e.mean or 0.0) * factor
            means.append(mean)
            errors[0].append(max(0.0, mean - (e.lower if e.lower is not None else e.mean or 0.0) * factor))
            errors[1].append(max(0.0, (e.upper if e.upper is not None else e.mean or 0.0) * factor - mean))
        ax.bar(x + (i - (len(models) - 1) / 2) * width, means, width, yerr=errors, capsize=3, label=model)
    ax.set_xticks(x, [METRIC_LABELS[m] + (" /100" if scale.get(m, 1.0) != 1.0 else "") for m in metrics], rotation=20, ha="right")
    ax.set_ylabel("mean with 95% interval")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _heatmap(path: Path, models, value, title: str, empty: str) -> Path:
    plt = _pyplot()
    n = len(models)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * n + 2.5), max(3.5, 0.8 * n + 2)))
    if n:
        matrix = np.array([[np.nan if a == b or value(a, b) is None else value(a, b) for b in models] for a in models], dtype=float)
        image = ax.imshow(np.nan_to_num(matrix, nan=0.5), cmap="RdBu", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                if not np.isnan(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=9)
        ax.set_xticks(range(n), models, rotation=30, ha="right")
        ax.set_yticks(range(n), models)
        fig.colorbar(image, ax=ax, label="win rate of row against column")
    else:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
    return _saved(plt, fig, ax, path, title)


def write_report_plots(out: Path, models, estimates, summary, humans: HumanVotes) -> dict[str, Path]:
    from arena.leaderboard import compute_leaderboard, write_plots

    out.mkdir(parents=True, exist_ok=True)
    plots = {
        "metrics": _bars(out / "golden_metrics.png", models, PLOT_METRICS, estimates, "Golden-answer metrics", {"bleu": 0.01}),
        "rag": _bars(out / "rag_metrics.png", models, RAG_METRICS, estimates, "RAG metrics (Ragas definitions, local)", {}),
        "judge": _heatmap(out / "judge_win_rate.png", models if summary else [],
                          (lambda a, b: summary.win_rate(a, b)) if summary else None,
                          "LLM judge win rate (swap rule, ties ½)", "no pairwise judgments"),
    }
    board = humans.board or compute_leaderboard([], bootstrap_rounds=0)
    plots["ratings"], plots["human_win_rate"] = write_plots(board, out / "arena")
    return plots


def plot_agreement(out: Path, agreements: Mapping[str, Agreement], humans: HumanVotes) -> Path:
    path = out / "agreement.png"
    plt = _pyplot()
    names = list(agreements)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(names) + 2), 4))
    if names and humans.board is not None:
        x = np.arange(len(names))
        rates = [agreements[n].rate if agreements[n].rate is not None else np.nan for n in names]
        taus = [agreements[n].kendall_tau if agreements[n].kendall_tau is not None else np.nan for n in names]
        ax.bar(x - 0.2, rates, 0.4, label="agreement rate")
        ax.bar(x + 0.2, taus, 0.4, label="Kendall tau")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(x, names, rotation=35, ha="right")
        ax.set_ylim(-1.05, 1.05)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no human votes yet", ha="center", va="center", transform=ax.transAxes)
    return _saved(plt, fig, ax, path, "Agreement of automatic evaluators with human votes")


def plot_reddit_preference(out: Path, reddit: Mapping[str, RedditAgreement]) -> Path:
    path = out / "reddit_preference.png"
    plt = _pyplot()
    labels = [(key, label) for key, label in evaluator_labels() if key in reddit and reddit[key].estimate.n]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(labels) + 2), 4.2))
    if labels:
        x = np.arange(len(labels))
        means = [reddit[k].estimate.mean for k, _ in labels]
        errors = [[m - reddit[k].estimate.lower for m, (k, _) in zip(means, labels)],
                  [reddit[k].estimate.upper - m for m, (k, _) in zip(means, labels)]]
        ax.bar(x, means, 0.6, yerr=errors, capsize=3)
        ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--", label="chance")
        ax.set_xticks(x, [label for _, label in labels], rotation=40, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("prefers the upvoted reply (95% CI)")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no Reddit-preference pairs", ha="center", va="center", transform=ax.transAxes)
    return _saved(plt, fig, ax, path, "Agreement with Reddit upvotes")
