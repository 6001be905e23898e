"""`python -m evaluation run`: answer every golden question with every model, score, judge.

Answers are greedy; the uncached (model, question) rows go through the engine in batched passes
(`evaluation.batch_size` rows each, per-row adapters), with the RAG models' prompts holding the
documents retrieved for the question. The judge reads the answers (evaluation/judge/), and
the Reddit-preference pairs of the golden threads are scored by every metric and the judge
(evaluation/reddit_scoring.py). Everything computed goes into the cache first; the run then
writes results.json, which `python -m evaluation report` renders.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import os
from collections.abc import Mapping
from pathlib import Path

from chatbot.sampling import REPETITION_PENALTY_SCOPE
from evaluation.behaviour import behaviour_metrics
from evaluation.cache import RESULTS_FILE, EvaluationCache, SCORER_VERSION, model_fingerprint, scorer_fingerprint, text_hash
from evaluation.config import PAIRWISE, SINGLE, EvaluationConfig
from evaluation.golden import load_golden
from evaluation.judge import (
    JudgeError,
    PairwiseItem,
    grading_prompt,
    is_local,
    judge_from_config,
    judge_grades,
    judge_pairwise,
)
from evaluation.metrics import golden_metrics
from evaluation.rag_metrics import rag_metrics
from evaluation.reddit_scoring import score_reddit_preference
from evaluation.run_progress import Progress, ProgressCallback, RunStats, machine_description
from fsutils import files_digest, write_text_atomic
from settings import Settings

CACHE_FILE = "cache.sqlite3"




@dataclasses.dataclass
class RunResult:
    results_path: Path
    stats: RunStats
    notices: list[str]




def _document_dict(document) -> dict:
    return {k: getattr(document, k) for k in ("doc_id", "text", "title", "subreddit", "permalink")}


def run_evaluation(
    settings: Settings,
    *,
    engine=None,
    rag=None,
    judge=None,
    adapters_dir: Path | None = None,
    config: EvaluationConfig | None = None,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunResult:
    """Answer, score and judge; cached per (model fingerprint, question, retrieval, prompt).

    `engine`/`rag`/`judge` default to the configured ones (the judge: an endpoint named by the
    environment, else the engine's `judge.local_model`). `adapters_dir` is where the engine's
    adapters were loaded from (for fingerprints; default paths.adapters). `progress`: tqdm bars;
    `on_progress(stage, done, total)` is called as each stage advances (stages: STAGES).
    """
    import time

    started = time.monotonic()
    config = config or EvaluationConfig.from_settings(settings)
    environ = os.environ if environ is None else environ
    adapters_dir = Path(adapters_dir or settings.path("adapters"))
    every_question = load_golden(settings)
    questions = every_question[: config.max_questions] if config.max_questions else every_question
    notices: list[str] = []
    report = Progress(progress, on_progress)

    if engine is None:
        from chatbot.engine import engine_from_settings

        engine = engine_from_settings(settings, adapters_dir=adapters_dir)
    wanted = list(config.models) or list(engine.adapters)
    models = [m for m in wanted if m in engine.adapters]
    for name in wanted:
        if name not in engine.adapters:
            notices.append(f"model '{name}' is not evaluated: {engine.adapter_errors.get(name, 'not served by the engine')}")
    if not models:
        raise ValueError(f"no model to evaluate: none of {wanted} is served (have: {engine.adapters})")
    retrieval_models = [m for m in models if m in config.retrieval_models]
    if rag is None:
        from chatbot.rag import RagChat

        # The Reddit-preference pairs need retrieval too (faithfulness of a reply to the documents).
        wants_retrieval = bool(retrieval_models) or config.reddit_preference.enabled
        rag = RagChat.from_settings(engine, settings, retrieval=wants_retrieval)
    if retrieval_models and not rag.retrieval_available:
        notices.append(f"retrieval is unavailable, so {', '.join(retrieval_models)} answered without documents: "
                       f"{rag.unavailable_reason or 'no retriever'}")

    fingerprints = {m: model_fingerprint(m, engine.base_model_id, adapters_dir) for m in models}
    cache = EvaluationCache(config.directory / CACHE_FILE)
    stats = RunStats(questions=len(questions), models=len(models))

    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.monotonic()
        stats.stage_seconds[stage] = round(now - clock, 1)
        clock = now

    answers = _answer_all(engine, rag, cache, questions, models, fingerprints, retrieval_models, config, stats, report)
    lap("answers")
    scores = _score_all(cache, questions, models, answers, config, stats, report)
    lap("scores")

    judge_section: dict = {"modes": list(config.judge.modes), "identity": None, "local": None, "model": None,
                           "reference_guided": config.judge.reference_guided, "baseline": config.judge.baseline,
                           "pairwise": [], "grades": {},
                           "error": None}
    if config.judge.modes:
        try:
            if judge is None:
                judge_model = config.judge.local_model
                fingerprint = (model_fingerprint(judge_model, engine.base_model_id, adapters_dir)
                               if judge_model in engine.adapters else "")
                judge = judge_from_config(config.judge, engine, environ=environ, local_fingerprint=fingerprint,
                                          progress=lambda done, total: report("judging", done, total))
            judge_section["identity"] = judge.identity
            judge_section["local"] = is_local(judge)
            # The report names the local judge's weights: the engine model and its base checkpoint.
            judge_section["model"] = (f"{config.judge.local_model} on {engine.base_model_id}" if is_local(judge)
                                      else getattr(judge, "model", None))
            _judge_all(judge, cache, questions, models, answers, config, stats, judge_section)
        except JudgeError as err:
            judge_section["error"] = str(err)
            notices.append(f"the LLM judge failed: {err}")
            judge = None
    lap("judge")

    reddit = score_reddit_preference(settings, config, rag, judge, cache, every_question, stats, report)
    lap("reddit pairs")
    stats.seconds = round(time.monotonic() - started, 1)

    results = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "base_model": engine.base_model_id,
        "embedder": config.embedder,
        "max_new_tokens": config.max_new_tokens,
        "thresholds": {"support": config.support_threshold, "context_relevance": config.context_relevance_threshold},
        "models": [{"name": m, "fingerprint": fingerprints[m], "retrieval": m in retrieval_models} for m in models],
        "questions": [dataclasses.asdict(q) for q in questions],
        "answers": {m: {q.question_id: {"answer": answers[m][q.question_id]["answer"],
                                        "documents": len(answers[m][q.question_id]["documents"])}
                        for q in questions} for m in models},
        "scores": scores,
        "judge": judge_section,
        "reddit_preference": reddit,
        "stats": dataclasses.asdict(stats),
        "machine": machine_description(getattr(engine, "model_threads", None)),
        "notices": notices,
    }
    path = write_text_atomic(config.directory / RESULTS_FILE, json.dumps(results, indent=1, ensure_ascii=False))
    return RunResult(path, stats, notices)


def _answer_all(engine, rag, cache, questions, models, fingerprints, retrieval_models, config, stats, report) -> dict:
    answers: dict[str, dict[str, dict]] = {m: {} for m in models}
    sampling = {"temperature": 0, "max_new_tokens": config.max_new_tokens}
    pending = []  # (question, model, answer key, prepared turn, prompt hash), all questions together
    for question in report.iterate(questions, "retrieving"):
        messages = [{"role": "user", "content": question.question}]
        turns = {flag: rag.prepare(messages, use_retrieval=flag) for flag in {m in retrieval_models for m in models}}
        for model in models:
            flag = model in retrieval_models
            turn = turns[flag]
            # The served weight format too (`auto` may pick int4 on one machine, int8 on another):
            # greedy answers differ between formats. A remote engine has none.
            prompt_hash = text_hash("prompt", turn.messages, engine.system_prompt, sampling, REPETITION_PENALTY_SCOPE,
                                    getattr(engine, "quantization", None))
            key = cache.answer_key(fingerprints[model], question.question_hash, flag, prompt_hash)
            cached = cache.answer(key)
            if cached is not None:
                stats.answers_cached += 1
                answers[model][question.question_id] = {"key": key, "answer": cached.answer, "raw": cached.raw_text,
                                                        "documents": cached.documents}
            else:
                pending.append((question, model, key, turn, prompt_hash))
    # Rows of several questions and models share each batched pass (left-padded by the engine):
    # decoding steps, not prompt length, dominate the cost of a small model on a CPU.
    batches = [pending[i:i + config.batch_size] for i in range(0, len(pending), config.batch_size)]
    for batch in report.iterate(batches, "answering"):
        texts = engine.complete_rows([(turn.messages, model) for _, model, _, turn, _ in batch], **sampling)
        for (question, model, key, turn, prompt_hash), text in zip(batch, texts):
            answer = rag.postprocess(text, turn.documents).answer
            documents = [_document_dict(d) for d in turn.documents]
            cache.put_answer(key, model=model, model_fingerprint_=fingerprints[model], question_hash=question.question_hash,
                             retrieval=model in retrieval_models, prompt_hash=prompt_hash, raw_text=text, answer=answer,
                             documents=documents)
            stats.answers_generated += 1
            answers[model][question.question_id] = {"key": key, "answer": answer, "raw": text, "documents": documents}
    return answers




def _score_all(cache, questions, models, answers, config, stats, report) -> dict:
    from evaluation.encoder import TextEncoder

    encoder = None
    scorer = scorer_fingerprint(config)
    scores: dict[str, dict[str, dict]] = {m: {} for m in models}
    for question in report.iterate(questions, "scoring"):
        todo = []
        for model in models:
            entry = answers[model][question.question_id]
            cached = cache.scores(entry["key"], scorer, question.reference_hash)
            if cached is not None:
                stats.scores_cached += 1
                scores[model][question.question_id] = cached
            else:
                todo.append(model)
        if not todo:
            continue
        encoder = encoder or TextEncoder.shared(config.embedder)
        texts = [answers[m][question.question_id]["answer"] for m in todo]
        golden = golden_metrics(texts, [question.reference] * len(todo), encoder)
        for model, row in zip(todo, golden):
            entry = answers[model][question.question_id]
            contexts = [d["text"] for d in entry["documents"]]
            row.update(rag_metrics(question.question, entry["answer"], question.reference, contexts, encoder,
                                   support_threshold=config.support_threshold,
                                   context_relevance_threshold=config.context_relevance_threshold))
            row.update(behaviour_metrics(entry["raw"], entry["documents"]))
            cache.put_scores(entry["key"], scorer, question.reference_hash, row)
            stats.scores_computed += 1
            scores[model][question.question_id] = row
    return scores


def _judge_all(judge, cache, questions, models, answers, config, stats, section: dict) -> None:
    """All prompts of the run at once, so the local judge fills its batches across questions."""
    baseline = config.judge.baseline
    if baseline and baseline in models:
        pairs = [(baseline, m) for m in models if m != baseline]
    else:
        pairs = list(itertools.combinations(models, 2))
    reference = (lambda q: q.reference) if config.judge.reference_guided else (lambda q: None)
    if PAIRWISE in config.judge.modes and pairs:
        items = [PairwiseItem(q.question_id, q.question, x, answers[x][q.question_id]["answer"],
                              y, answers[y][q.question_id]["answer"], reference(q)) for q in questions for x, y in pairs]
        results, asked = judge_pairwise(judge, items, max_answer_chars=config.judge.max_answer_chars, cache=cache)
        stats.count_judge_prompts(asked, 2 * len(items))
        section["pairwise"].extend(dataclasses.asdict(r) for r in results)
    if SINGLE in config.judge.modes:
        rows = [(q, m) for q in questions for m in models]
        prompts = [grading_prompt(q.question, answers[m][q.question_id]["answer"], config.judge.max_answer_chars,
                                  reference(q)) for q, m in rows]
        grades, asked = judge_grades(judge, prompts, cache=cache)
        stats.count_judge_prompts(asked, len(prompts))
        for (q, model), grade in zip(rows, grades):
            section["grades"].setdefault(model, {})[q.question_id] = grade




# --------------------------------------------------------------------------------- pipeline step
def inputs_fingerprint(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """Everything a run's results depend on, for the pipeline's `evaluate` step to tell whether
    the report is current: the evaluation settings and scorer version, the golden data and the
    threads (Reddit pairs), every configured adapter's weights, the base model and its prompts,
    and which judge endpoint the environment names (never the key). The index is the caller's
    to add (the pipeline has its stamp; the store's files change when it is merely opened)."""
    from modeling.adapters import ADAPTER_WEIGHT_FILES, current_adapter_dir

    environ = os.environ if environ is None else environ
    config = EvaluationConfig.from_settings(settings)
    adapters_dir = settings.path("adapters")
    adapters = {}
    for name in settings.get("model.adapters") or []:
        folder = current_adapter_dir(adapters_dir / name)
        has_weights = any((folder / f).exists() for f in ADAPTER_WEIGHT_FILES)
        adapters[name] = model_fingerprint(name, str(settings.get("model.base")), adapters_dir) if has_weights else None
    datasets_dir = settings.path("datasets")
    return text_hash(
        "evaluation-inputs", SCORER_VERSION, REPETITION_PENALTY_SCOPE, settings.get("evaluation"), settings.get("model"),
        settings.get("generation"), settings.get("retrieval"), settings.get("embedder"), settings.get("data.datasets"),
        files_digest(datasets_dir / "golden", "*.arrow"), files_digest(settings.path("threads"), "data-*.arrow"),
        adapters,
        [(environ.get(name) or "").strip() for name in (config.judge.base_url_env, config.judge.model_env)],
    )[:16]


def outputs_exist(settings: Settings) -> bool:
    """results.json and report.md are there (what the Evaluation tab shows)."""
    from evaluation.report import REPORT_FILE

    directory = EvaluationConfig.from_settings(settings).directory
    return (directory / RESULTS_FILE).is_file() and (directory / REPORT_FILE).is_file()


def run_and_report(settings: Settings, **options) -> tuple[RunResult, Path]:
    """`run_evaluation(settings, **options)`, then the report: the pipeline step and the app's button."""
    from evaluation.report import write_report

    result = run_evaluation(settings, **options)
    return result, write_report(settings, config=options.get("config"))
