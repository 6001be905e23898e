"""Evaluation: the study's comparison of methods (base, QLoRA, RAFT, RLHF) and of evaluation
methods (NLP metrics, RAG metrics, an LLM judge) against human judgements (Reddit upvotes on the
golden threads' replies, and arena votes), in one command or as the pipeline's last step.

    python -m evaluation run      answer every golden question with every model; score; judge (cached)
    python -m evaluation report   report.md + plots under {home}/evaluation

    run_evaluation(settings, engine=None, ...) -> RunResult
    run_and_report(settings, ...) -> (RunResult, report path)   the pipeline's `evaluate` step
    write_report(settings) -> Path
    EvaluationConfig.from_settings(settings)

Names are imported on first use, so `import evaluation` stays light (the app imports the UI).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EvaluationConfig": "evaluation.config",
    "JudgeConfig": "evaluation.config",
    "run_evaluation": "evaluation.runner",
    "run_and_report": "evaluation.runner",
    "load_golden": "evaluation.golden",
    "GoldenMissingError": "evaluation.golden",
    "RunResult": "evaluation.runner",
    "RunStats": "evaluation.run_progress",
    "write_report": "evaluation.report",
    "ResultsMissingError": "evaluation.report",
    "REPORT_FILE": "evaluation.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
