"""The preference data RLHF trains on (Reddit pairs + exported arena votes) and its start adapter."""


from __future__ import annotations

from pathlib import Path

from modeling.adapters import ADAPTER_CONFIG_FILE
from raft import system_prompt_with_documents
from settings import Settings
from training.adapter_output import read_metadata
from training.datasets.config import TRAIN, VALIDATION
from training.errors import TrainingError
from training.examples import (
    check_no_golden,
    dataset_fingerprint,
    load_splits,
    sample_rows,
    with_system_prompt,
)
from training.config import TrainingConfig



REWARD_ADAPTER = "reward"
RLHF_ADAPTER = "rlhf"
ARENA_PREFERENCE = "arena_preference"
PAIR_COLUMNS = ["prompt", "chosen", "rejected"]


def preference_sources(settings: Settings, config: TrainingConfig) -> dict[str, Path]:
    datasets_dir = settings.path("datasets")
    sources = {"preference": datasets_dir / "preference"}
    arena = datasets_dir / ARENA_PREFERENCE
    if config.use_arena_votes and arena.is_dir():
        sources[ARENA_PREFERENCE] = arena
    return sources


def preference_fingerprints(settings: Settings, config: TrainingConfig) -> dict[str, str]:
    return {name: dataset_fingerprint(path) for name, path in preference_sources(settings, config).items()}


def load_pairs(settings: Settings, config: TrainingConfig, run_settings):
    """Train pairs = Reddit preference pairs + arena votes (when exported); validation = the held-out
    preference slice. The system prompt goes in front of every prompt, as the chatbot serves it."""
    from datasets import concatenate_datasets

    datasets_dir = settings.path("datasets")
    sources = preference_sources(settings, config)
    splits = {name: load_splits(datasets_dir, name, step_hint=(
        "python -m arena export" if name == ARENA_PREFERENCE else "python -m training build")) for name in sources}
    check_no_golden(datasets_dir, *(split for dd in splits.values() for split in dd.values()))
    for name, dd in splits.items():
        missing = [c for c in PAIR_COLUMNS if c not in dd[TRAIN].column_names]
        if missing:
            raise TrainingError(f"the {name} dataset lacks columns {missing}")
    train = concatenate_datasets([dd[TRAIN].select_columns(PAIR_COLUMNS) for dd in splits.values()
                                  if len(dd[TRAIN])])
    validation = splits["preference"][VALIDATION].select_columns(PAIR_COLUMNS)
    system_prompt = settings.config.model.system_prompt
    # Pairs whose prompt holds documents (RLHF starts from RAFT and is served with retrieval)
    # get the documents system prompt, exactly as the chatbot sends it.
    documents_prompt = system_prompt_with_documents(system_prompt)
    available = {TRAIN: len(train), VALIDATION: len(validation)}
    train = sample_rows(with_system_prompt(train, system_prompt, documents_prompt), run_settings.max_train_rows,
                        config.seed)
    validation = sample_rows(with_system_prompt(validation, system_prompt, documents_prompt),
                             run_settings.max_eval_rows, config.seed)
    if not len(train) or not len(validation):
        raise TrainingError("no preference pairs to train on; run `python -m training build` first")
    rows = {name: {split: len(dd[split]) for split in dd} for name, dd in splits.items()}
    rows["sampled"] = {"seed": config.seed, "available": available,
                       "used": {TRAIN: len(train), VALIDATION: len(validation)},
                       "max_train_rows": run_settings.max_train_rows, "max_eval_rows": run_settings.max_eval_rows}
    return train, validation, rows


def data_record(settings, config, fingerprints, rows) -> dict:
    """Per source: path, fingerprint, rows; plus `sampled`: the seeded subsample actually used."""
    sources = preference_sources(settings, config)
    record = {name: {"path": str(sources[name]), "fingerprint": fingerprints[name], "rows": rows[name]}
              for name in sources}
    for key in ("sampled", "dropped_too_long"):
        if key in rows:
            record[key] = rows[key]
    return record


def require_start_adapter(settings: Settings, config: TrainingConfig) -> Path:
    from modeling.base_model import ModelConfig

    start = settings.path("adapters") / config.rlhf_start_adapter
    if not (start / ADAPTER_CONFIG_FILE).exists():
        raise TrainingError(
            f"RLHF starts from the '{config.rlhf_start_adapter}' adapter, which is missing at {start}; "
            f"train it first with `python -m training {config.rlhf_start_adapter}`")
    recorded = (read_metadata(start) or {}).get("base_model")
    base = ModelConfig.from_settings(settings).base
    if recorded and recorded != base:
        raise TrainingError(f"the '{config.rlhf_start_adapter}' adapter was trained on {recorded!r}, not on the "
                            f"configured base {base!r}; retrain it with `python -m training {config.rlhf_start_adapter}`")
    return start


def start_fingerprint(start: Path) -> str | None:
    return (read_metadata(start) or {}).get("inputs_fingerprint")
