"""The shape of wayfarer.yaml: one pydantic model per section, checked when settings load.

These models declare types only. Every value, defaults included, is written once, in
wayfarer.yaml (`defaults:` and the profiles), where it is documented; no field here has a
default, so a key missing from the file fails by name instead of falling back to a second copy
of the value in code. Unknown keys fail too (extra="forbid"), and types are strict (a string is
not an integer, `true` is not a number), so a typo or a wrong type stops the program at
start-up with the dotted key (`training.qlora.batch_size: Input should be a valid integer`)
rather than mid-run. `X | None` marks the keys whose null has a meaning (see the YAML).

Range and cross-field rules stay with the package that owns a section (its config dataclass),
since they need that package's vocabulary; this module depends on nothing in the project.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A YAML mapping: no unknown keys, no coercion, read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PathsSection(Section):
    home: str
    home_fallback: str
    models: str
    data: str
    threads: str
    datasets: str
    index: str
    adapters: str
    votes: str
    demo_corpus: str


class RuntimeSection(Section):
    offline: bool
    torch_threads: int
    seed: int
    max_batch_rows: int
    max_cached_tokens: int
    max_queued_requests: int
    zero_gpu_duration_s: int | None


class ModelSection(Section):
    base: str
    gguf_file: str | None
    quantization: str
    compute_dtype: str
    device: str
    adapters: list[str]
    adapter_poll_s: float
    system_prompt: str


class GenerationSection(Section):
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    repeat_ngram_size: int
    max_ngram_repeats: int
    max_input_tokens: int


class EmbedderSection(Section):
    model: str


class RedditApiSection(Section):
    listings: list[str]
    time_filter: str
    limit: int
    comment_sort: str


class CleaningSection(Section):
    min_post_score: int
    min_comment_score: int
    min_comments: int
    max_comments_per_thread: int
    min_comment_chars: int
    max_title_chars: int
    max_body_chars: int
    max_comment_chars: int
    drop_nsfw: bool
    drop_stickied_comments: bool
    bot_authors: list[str]
    bot_author_pattern: str
    bot_body_markers: list[str]
    api: RedditApiSection


class DatasetsSection(Section):
    seed: int | None
    golden_fraction: float
    golden_min_threads: int
    validation_fraction: float
    question_max_chars: int
    answer_min_chars: int
    answer_max_chars: int
    sft_second_comment_score_ratio: float | None
    raft_oracle_probability: float
    raft_distractors: int
    raft_idk_fraction: float
    raft_idk_answer: str
    raft_max_quotes: int
    raft_quote_min_chars: int
    raft_quote_max_chars: int
    raft_answer_max_chars: int
    raft_hard_negatives: bool
    preference_answer_max_chars: int
    preference_min_score_gap: int
    preference_max_pairs_per_thread: int


class DataSection(Section):
    subreddits: list[str]
    cleaning: CleaningSection
    datasets: DatasetsSection


class ChromaSection(Section):
    mode: str
    host: str
    port: int
    ssl: bool
    auth_token_env: str | None
    auth_header: str
    tenant: str
    database: str


class RetrievalSection(Section):
    collection: str
    chunk_tokens: int
    chunk_overlap_tokens: int
    max_comments: int
    top_k: int
    min_similarity: float
    embed_batch_size: int
    write_batch_size: int
    followup_max_words: int
    chroma: ChromaSection


class EvidenceSection(Section):
    sentences: int
    min_chars: int
    max_chars: int
    recent_days: int


class RetrainSection(Section):
    min_new_votes: int
    max_regression: float
    eval_questions: int
    eval_max_new_tokens: int
    reddit_pairs: int
    max_steps: int | None
    method: str
    poll_s: float
    in_app: bool


class ArenaSection(Section):
    sampling_weights: dict[str, float]
    use_retrieval: bool
    sampling: dict[str, Any]  # overrides of `generation`, checked by SamplingConfig.override
    max_question_chars: int
    vote_store: str
    postgres_dsn_env: str
    session_salt_env: str
    max_votes_per_minute: int
    max_votes_per_hour: int
    max_votes_per_day: int
    abuse_votes: int
    abuse_minutes: float
    include_flagged_votes: bool
    prior_ties: float
    rating_intervals: str
    bootstrap_rounds: int
    provisional_battles: int
    elo_k: float
    elo_scale: float
    elo_base: float
    leaderboard_dir: str | None
    export_validation_fraction: float
    fold_versions: bool
    retrain: RetrainSection


class LoraSection(Section):
    r: int
    alpha: int
    dropout: float
    target_modules: str | list[str]
    top_layers: int | None


class RunSection(Section):
    """Hyper-parameters every trainer shares (one block per method)."""

    learning_rate: float
    epochs: float
    max_steps: int
    batch_size: int
    grad_accumulation: int
    max_length: int
    eval_steps: int
    logging_steps: int
    max_train_rows: int | None
    max_eval_rows: int | None
    warmup_ratio: float
    lr_scheduler: str
    optimizer: str
    bf16: bool
    gradient_checkpointing: bool
    weight_decay: float


class DpoSection(RunSection):
    beta: float


class OnlineSection(RunSection):
    trainer: str
    num_generations: int
    max_completion_length: int
    temperature: float
    beta: float


class TrainingSection(Section):
    seed: int | None
    compute_dtype: str | None
    quantization: str
    attention: str
    side_by_side_sft: bool
    rlhf_method: str
    rlhf_start_adapter: str
    use_arena_votes: bool
    min_answer_tokens: int
    lora: LoraSection
    qlora: RunSection
    raft: RunSection
    reward: RunSection
    dpo: DpoSection
    online: OnlineSection


class JudgeSection(Section):
    modes: list[str]
    local_model: str
    batch_size: int
    max_prompt_tokens: int
    max_answer_chars: int
    reference_guided: bool
    baseline: str | None
    base_url_env: str
    api_key_env: str
    model_env: str
    remote_max_tokens: int
    remote_concurrency: int
    timeout_s: float


class RedditPreferenceSection(Section):
    enabled: bool
    min_score_ratio: float
    max_pairs: int | None
    judge_max_pairs: int | None


class EvaluationSection(Section):
    models: list[str]
    retrieval_models: list[str]
    max_new_tokens: int
    batch_size: int
    max_questions: int | None
    embedder: str | None
    support_threshold: float
    context_relevance_threshold: float
    bootstrap_rounds: int
    seed: int | None
    output_dir: str | None
    judge: JudgeSection
    reddit_preference: RedditPreferenceSection


class InferenceSection(Section):
    backend: str
    base_url: str
    api_key_env: str
    models: dict[str, str]
    timeout_s: float


class UiSection(Section):
    server_name: str
    server_port: int
    concurrency_limit: int
    max_message_chars: int
    examples: list[str]


class WayfarerConfig(Section):
    """The merged configuration of one profile: every section, each required."""

    paths: PathsSection
    runtime: RuntimeSection
    model: ModelSection
    generation: GenerationSection
    embedder: EmbedderSection
    data: DataSection
    retrieval: RetrievalSection
    evidence: EvidenceSection
    arena: ArenaSection
    training: TrainingSection
    evaluation: EvaluationSection
    inference: InferenceSection
    ui: UiSection
