"""Whether a candidate may be published: the local probability judge (pairwise, both orders)
on golden questions, and the Reddit-preference agreement, against the served model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from retraining.config import CANDIDATE, RetrainConfig
from settings import Settings


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
    from evaluation.golden import GoldenMissingError, load_golden
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
