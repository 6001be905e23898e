"""`python -m evaluation run`: answer every golden question with every model, score, judge.

Answers are greedy; the uncached (model, question) rows go through the engine in batched passes
(`evaluation.batch_size` rows each, per-row adapters), with the RAG models' prompts holding the
documents retrieved for the question. Everything computed goes into the cache first; the run
then writes results.json, which `python -m evaluation report` renders.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import os
from collections.abc import Mapping
from pathlib import Path

from evaluation.cache import EvaluationCache, model_fingerprint, text_hash
from evaluation.config import PAIRWISE, SINGLE, EvaluationConfig
from evaluation.judge import (
    JudgeError,
    PairwiseItem,
    complete_cached,
    grading_prompt,
    judge_from_config,
    judge_pairwise,
    parse_grade,
)
from evaluation.metrics import golden_metrics
from evaluation.rag_metrics import rag_metrics
from settings import Settings


RESULTS_FILE = "results.json"
CACHE_FILE = "cache.sqlite3"
SCORER_VERSION = "metrics-v1"  # bump when a metric's definition changes: cached scores are recomputed


class GoldenMissingError(FileNotFoundError):
    """No golden dataset to evaluate on."""


@dataclasses.dataclass(frozen=True)
class GoldenQuestion:
    question_id: str  # the thread id
    question: str
    reference: str
    subreddit: str
    permalink: str

    @property
    def question_hash(self) -> str:
        return text_hash("question", self.question)

    @property
    def reference_hash(self) -> str:
        return text_hash("reference", self.question, self.reference)


@dataclasses.dataclass
class RunStats:
    questions: int = 0
    models: int = 0
    answers_generated: int = 0
    answers_cached: int = 0
    scores_computed: int = 0
    scores_cached: int = 0
    judge_prompts_asked: int = 0
    judge_prompts_cached: int = 0

    @property
    def computed(self) -> int:
        """Everything that was not found in the cache (0 on an unchanged rerun)."""
        return self.answers_generated + self.scores_computed + self.judge_prompts_asked

    def summary(self) -> str:
        return (
            f"{self.questions} questions x {self.models} models: "
            f"answers {self.answers_generated} generated / {self.answers_cached} cached, "
            f"scores {self.scores_computed} computed / {self.scores_cached} cached, "
            f"judge prompts {self.judge_prompts_asked} asked / {self.judge_prompts_cached} cached"
        )


@dataclasses.dataclass
class RunResult:
    results_path: Path
    stats: RunStats
    notices: list[str]


def load_golden(settings: Settings, max_questions: int | None = None) -> list[GoldenQuestion]:
    """The golden questions in thread-id order (a stable subset when `max_questions` is set)."""
    path = settings.path("datasets") / "golden"
    if not path.exists():
        raise GoldenMissingError(
            f"no golden dataset at {path}; build it with `python -m training build` "
            "(after `python -m training ingest`)"
        )
    from datasets import load_from_disk

    rows = load_from_disk(str(path))
    missing = {"thread_id", "question", "reference_answer"} - set(rows.column_names)
    if missing:
        raise GoldenMissingError(f"golden dataset {path} lacks columns {sorted(missing)}; rebuild it")
    questions = sorted(
        (GoldenQuestion(str(r["thread_id"]), r["question"], r["reference_answer"], r.get("subreddit") or "",
                        r.get("permalink") or "") for r in rows if (r["question"] or "").strip()),
        key=lambda q: q.question_id,
    )
    if not questions:
        raise GoldenMissingError(f"golden dataset {path} has no questions")
    return questions[:max_questions] if max_questions else questions


def _progress(iterable, *, desc: str, enabled: bool, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total)


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
    environ: Mapping[str, str] | None = None,
) -> RunResult:
    """Answer, score and judge; cached per (model fingerprint, question, retrieval, prompt).

    `engine`/`rag`/`judge` default to the configured ones (the judge: an endpoint named by the
    environment, else the engine's `judge.local_model`). `adapters_dir` is where the engine's
    adapters were loaded from (for fingerprints; default paths.adapters).
    """
    config = config or EvaluationConfig.from_settings(settings)
    environ = os.environ if environ is None else environ
    adapters_dir = Path(adapters_dir or settings.path("adapters"))
    questions = load_golden(settings, config.max_questions)
    notices: list[str] = []

    if engine is None:
        from chatbot import ChatEngine

        engine = ChatEngine.from_settings(settings, adapters_dir=adapters_dir)
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

        rag = RagChat.from_settings(engine, settings) if retrieval_models else RagChat(engine, None)
    if retrieval_models and not rag.retrieval_available:
        notices.append(f"retrieval is unavailable, so {', '.join(retrieval_models)} answered without documents: "
                       f"{rag.unavailable_reason or 'no retriever'}")

    fingerprints = {m: model_fingerprint(m, engine.base_model_id, adapters_dir) for m in models}
    cache = EvaluationCache(config.directory / CACHE_FILE)
    stats = RunStats(questions=len(questions), models=len(models))

    answers = _answer_all(engine, rag, cache, questions, models, fingerprints, retrieval_models, config, stats, progress)
    scores = _score_all(cache, questions, models, answers, config, stats, progress)

    judge_section: dict = {"modes": list(config.judge.modes), "identity": None, "pairwise": [], "grades": {}, "error": None}
    if config.judge.modes and (len(models) > 1 or SINGLE in config.judge.modes):
        try:
            if judge is None:
                judge_model = config.judge.local_model
                fingerprint = (model_fingerprint(judge_model, engine.base_model_id, adapters_dir)
                               if judge_model in engine.adapters else "")
                judge = judge_from_config(config.judge, engine, environ=environ, local_fingerprint=fingerprint,
                                          progress=progress)
            judge_section["identity"] = judge.identity
            _judge_all(judge, cache, questions, models, answers, config, stats, progress, judge_section)
        except JudgeError as err:
            judge_section["error"] = str(err)
            notices.append(f"the LLM judge failed: {err}")

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
        "stats": dataclasses.asdict(stats),
        "notices": notices,
    }
    config.directory.mkdir(parents=True, exist_ok=True)
    path = config.directory / RESULTS_FILE
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    temporary.replace(path)  # a report never reads a half-written file
    return RunResult(path, stats, notices)


def _answer_all(engine, rag, cache, questions, models, fingerprints, retrieval_models, config, stats, progress) -> dict:
    answers: dict[str, dict[str, dict]] = {m: {} for m in models}
    sampling = {"temperature": 0, "max_new_tokens": config.max_new_tokens}
    pending = []  # (question, model, answer key, prepared turn, prompt hash), all questions together
    for question in _progress(questions, desc="retrieving", enabled=progress):
        messages = [{"role": "user", "content": question.question}]
        turns = {flag: rag.prepare(messages, use_retrieval=flag) for flag in {m in retrieval_models for m in models}}
        for model in models:
            flag = model in retrieval_models
            turn = turns[flag]
            prompt_hash = text_hash("prompt", turn.messages, engine.system_prompt, sampling)
            key = cache.answer_key(fingerprints[model], question.question_hash, flag, prompt_hash)
            cached = cache.answer(key)
            if cached is not None:
                stats.answers_cached += 1
                answers[model][question.question_id] = {"key": key, "answer": cached.answer, "documents": cached.documents}
            else:
                pending.append((question, model, key, turn, prompt_hash))
    # Rows of several questions and models share each batched pass (left-padded by the engine):
    # decoding steps, not prompt length, dominate the cost of a small model on a CPU.
    batches = [pending[i:i + config.batch_size] for i in range(0, len(pending), config.batch_size)]
    for batch in _progress(batches, desc="answering", enabled=progress):
        texts = engine.complete_rows([(turn.messages, model) for _, model, _, turn, _ in batch], **sampling)
        for (question, model, key, turn, prompt_hash), text in zip(batch, texts):
            answer = rag.postprocess(text, turn.documents).answer
            documents = [_document_dict(d) for d in turn.documents]
            cache.put_answer(key, model=model, model_fingerprint_=fingerprints[model], question_hash=question.question_hash,
                             retrieval=model in retrieval_models, prompt_hash=prompt_hash, raw_text=text, answer=answer,
                             documents=documents)
            stats.answers_generated += 1
            answers[model][question.question_id] = {"key": key, "answer": answer, "documents": documents}
    return answers


def _score_all(cache, questions, models, answers, config, stats, progress) -> dict:
    from evaluation.encoder import TextEncoder

    encoder = None
    scorer = text_hash(SCORER_VERSION, config.embedder, config.support_threshold, config.context_relevance_threshold)
    scores: dict[str, dict[str, dict]] = {m: {} for m in models}
    for question in _progress(questions, desc="scoring", enabled=progress):
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
            cache.put_scores(entry["key"], scorer, question.reference_hash, row)
            stats.scores_computed += 1
            scores[model][question.question_id] = row
    return scores


def _judge_all(judge, cache, questions, models, answers, config, stats, progress, section: dict) -> None:
    """All prompts of the run at once, so the local judge fills its batches across questions."""
    pairs = list(itertools.combinations(models, 2))
    if PAIRWISE in config.judge.modes and pairs:
        items = [PairwiseItem(q.question_id, q.question, x, answers[x][q.question_id]["answer"],
                              y, answers[y][q.question_id]["answer"]) for q in questions for x, y in pairs]
        results, asked = judge_pairwise(judge, items, max_answer_chars=config.judge.max_answer_chars, cache=cache)
        stats.judge_prompts_asked += asked
        stats.judge_prompts_cached += 2 * len(items) - asked
        section["pairwise"].extend(dataclasses.asdict(r) for r in results)
    if SINGLE in config.judge.modes:
        text_of = {q.question_id: q.question for q in questions}
        rows = [(q.question_id, m) for q in questions for m in models]
        prompts = [grading_prompt(text_of[qid], answers[m][qid]["answer"], config.judge.max_answer_chars) for qid, m in rows]
        outputs, asked = complete_cached(judge, prompts, cache)
        stats.judge_prompts_asked += asked
        stats.judge_prompts_cached += len(prompts) - asked
        for (qid, model), output in zip(rows, outputs):
            section["grades"].setdefault(model, {})[qid] = parse_grade(output)
