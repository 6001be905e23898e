"""LLM-as-a-judge: pairwise verdicts under the swap rule, and single-answer 1-10 grades.

Prompts follow MT-Bench (Zheng et al., 2023), with its reference-guided variant when a golden
answer exists. A pair is judged in both orders; a verdict counts only when it survives the swap
(the same model wins both times, or both say tie), otherwise the pair is a tie and counts as a
flip.

Two kinds of judge:

* The local judge (one of the engine's models) does not write: it reads its verdict from the
  next-token distribution at the verdict position, one teacher-forced forward pass per prompt
  (`ChatEngine.score_rows`). The prompt is followed by the assistant prefix "Final verdict: [["
  and the verdict is the most probable of the tokens "A", "B" and "C" there (their probabilities
  renormalised over the three). The grade is G-Eval's (Liu et al., 2023) probability-weighted
  mean over the grade tokens after "Rating: [[". In the SmolLM2 tokenizer (and most others)
  digits are single tokens, so "10" is "1" followed by "0": the row is the prompt, the prefix
  and the token "1", and one pass gives both P(first digit) (at the prefix's last token) and,
  after "1", P("0") against P("]]"), which splits P("1") into P(1) and P(10). A tokenizer with
  a one-token "10" reads it directly. Nothing is parsed, so every prompt gets a verdict.
  A tiny local model (the embedded 135M) is a weak judge: its verdicts mostly measure position
  and length bias; the report says so.
* A text judge (an OpenAI-compatible endpoint such as GPT-4) writes its
  answer; "[[A]]"/"[[B]]"/"[[C]]" and "[[rating]]" are parsed from it. A verdict that cannot be
  parsed is a tie and is counted as unparseable.

Every judge returns, per prompt, a JSON-able output (the cache stores it as is): {"text": ...}
for a text judge, {"probabilities": {...}} for the local one; `read_verdict` and `read_grade`
turn either into a verdict or a grade.

Modules: `prompts` (prompts, the Judge protocol, output readers), `local` (LocalJudge), `remote`
(TextJudge, OpenAIJudge), `swap` (the swap rule, cached judging, the summary). The names below
are the package's surface; `judge_from_config` chooses the judge.
"""

from __future__ import annotations

from collections.abc import Callable

from evaluation.judge.local import LocalJudge
from evaluation.judge.prompts import (
    GRADE_KIND,
    GRADE_PREFIX,
    GRADES,
    PAIRWISE_KIND,
    PAIRWISE_PREFIX,
    TIE,
    VERDICT_LABELS,
    Judge,
    JudgeError,
    JudgePrompt,
    grading_prompt,
    pairwise_prompt,
    parse_grade,
    parse_pairwise_verdict,
    read_grade,
    read_verdict,
)
from evaluation.judge.remote import OpenAIJudge, TextJudge
from evaluation.judge.swap import (
    PairwiseItem,
    PairwiseResult,
    PairwiseSummary,
    apply_swap_rule,
    judge_cached,
    judge_grades,
    judge_pairwise,
    pairwise_prompts,
    summarize_pairwise,
)

__all__ = [
    "GRADES", "GRADE_KIND", "GRADE_PREFIX", "PAIRWISE_KIND", "PAIRWISE_PREFIX", "TIE", "VERDICT_LABELS",
    "Judge", "JudgeError", "JudgePrompt", "LocalJudge", "OpenAIJudge", "PairwiseItem", "PairwiseResult",
    "PairwiseSummary", "TextJudge", "apply_swap_rule", "grading_prompt", "is_local", "judge_cached",
    "judge_from_config", "judge_grades", "judge_pairwise", "pairwise_prompt", "pairwise_prompts",
    "parse_grade", "parse_pairwise_verdict", "read_grade", "read_verdict", "summarize_pairwise",
]


def judge_from_config(config, engine, *, environ, local_fingerprint: str,
                      progress: Callable[[int, int], None] | None = None) -> Judge:
    """The endpoint named by the environment when its base URL is set, else the local model."""
    base_url = (environ.get(config.base_url_env) or "").strip()
    if base_url:
        model = (environ.get(config.model_env) or "").strip()
        if not model:
            raise JudgeError(f"{config.base_url_env} is set but {config.model_env} (the judge model name) is not")
        return OpenAIJudge(base_url, model, environ.get(config.api_key_env) or None,
                           max_tokens=config.remote_max_tokens, timeout_s=config.timeout_s,
                           concurrency=config.remote_concurrency)
    if engine is None:
        raise JudgeError("no judge: the local engine is not loaded and no endpoint is configured")
    return LocalJudge(engine, config.local_model, fingerprint=local_fingerprint, batch_size=config.batch_size,
                      max_prompt_tokens=config.max_prompt_tokens, progress=progress)


def is_local(judge: Judge) -> bool:
    return isinstance(judge, LocalJudge)
