"""The `evaluation` section of wayfarer.yaml as dataclasses (light import)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from settings import ConfigError, Settings, build_dataclass

PAIRWISE = "pairwise"
SINGLE = "single"
JUDGE_MODES = (PAIRWISE, SINGLE)


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """The LLM judge, configured apart from the contestants: an engine model read through its
    token probabilities by default, an OpenAI-compatible endpoint when the environment names one
    (the key is read from the environment only, never from the file)."""

    modes: tuple  # pairwise (both orders, swap rule) and/or single (1-10 grades)
    local_model: str  # engine model name used as the local judge
    batch_size: int  # judge prompts per batched pass of the local engine
    max_prompt_tokens: int  # the local judge's prompt budget (texts are clipped further beyond it)
    max_answer_chars: int  # answers (and references) are cut to this in judge prompts
    reference_guided: bool  # MT-Bench's reference-guided prompts when a golden answer exists
    baseline: str | None  # set: pairwise compares every model with this one only (MT-Bench's
    # pairwise-baseline mode, n - 1 pairs instead of n(n-1)/2); null: every pair of models
    base_url_env: str  # set: judge with this OpenAI-compatible endpoint
    api_key_env: str
    model_env: str
    remote_max_tokens: int  # a remote judge may explain before its verdict
    remote_concurrency: int  # requests in flight at once to the endpoint
    timeout_s: float

    def __post_init__(self) -> None:
        unknown = set(self.modes) - set(JUDGE_MODES)
        if unknown:
            raise ConfigError(f"evaluation.judge.modes: unknown {sorted(unknown)} (known: {list(JUDGE_MODES)})")
        for name in ("batch_size", "max_prompt_tokens", "max_answer_chars", "remote_max_tokens", "remote_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"evaluation.judge.{name} must be at least 1")


@dataclasses.dataclass(frozen=True)
class RedditPreferenceConfig:
    """Reddit upvotes as human judgements: pairs of replies to one golden post, the upvoted one
    scoring at least `min_score_ratio` times the other, both long enough to be answers."""

    enabled: bool
    min_score_ratio: float  # the upvoted reply's score is at least this multiple of the other's
    max_pairs: int | None  # first N pairs (by thread id); null = all
    judge_max_pairs: int | None  # pairs the LLM judge sees (the first N of them); null = all

    def __post_init__(self) -> None:
        if self.min_score_ratio <= 1:
            raise ConfigError("evaluation.reddit_preference.min_score_ratio must be above 1")
        for name in ("max_pairs", "judge_max_pairs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"evaluation.reddit_preference.{name} must be at least 1 (or null for all)")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    models: tuple  # engine model names to evaluate; empty: every model the engine serves
    retrieval_models: tuple  # answer with retrieved documents (the RAG models)
    max_new_tokens: int  # greedy answers are cut here
    batch_size: int  # answers per batched pass of the engine (rows of several questions and models)
    max_questions: int | None  # first N golden questions (by thread id); null: all
    embedder: str | None  # encoder for BERTScore / similarities; null: embedder.model
    support_threshold: float  # cosine at which a context sentence supports a statement (faithfulness, recall)
    context_relevance_threshold: float  # cosine of a retrieved chunk and the reference that makes it relevant
    bootstrap_rounds: int  # resamples for the 95% intervals of the means
    seed: int | None  # bootstrap seed; null: runtime.seed
    output_dir: str | None  # cache, results and report; null: {home}/evaluation
    judge: JudgeConfig
    reddit_preference: RedditPreferenceConfig

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("evaluation.max_new_tokens and evaluation.batch_size must be at least 1")
        if self.max_questions is not None and self.max_questions < 1:
            raise ConfigError("evaluation.max_questions must be at least 1 (or null for all)")
        for name in ("support_threshold", "context_relevance_threshold"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"evaluation.{name} is a cosine similarity: between -1 and 1")
        if self.bootstrap_rounds < 0:
            raise ConfigError("evaluation.bootstrap_rounds must be >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> "EvaluationConfig":
        section = settings.section("evaluation")
        judge = section["judge"]
        judge["modes"] = tuple(judge["modes"])
        section["judge"] = build_dataclass(JudgeConfig, judge)
        section["reddit_preference"] = build_dataclass(RedditPreferenceConfig, section["reddit_preference"])
        for name in ("models", "retrieval_models"):
            section[name] = tuple(section[name])
        section["embedder"] = section["embedder"] or settings.config.embedder.model
        if section["seed"] is None:
            section["seed"] = settings.config.runtime.seed
        if section["output_dir"]:
            section["output_dir"] = str(settings.root / Path(section["output_dir"]).expanduser())
        else:
            section["output_dir"] = str(settings.path("home") / "evaluation")
        return build_dataclass(cls, section)

    @property
    def directory(self) -> Path:
        return Path(self.output_dir)
