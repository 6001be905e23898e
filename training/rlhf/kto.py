"""KTO (trl's KTOTrainer) on unpaired rows: "both bad" votes and thumbs-down as undesirable."""


from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from raft import system_prompt_with_documents
from settings import Settings
from training.datasets.config import TRAIN
from training.examples import load_splits, with_system_prompt
from training.completion_loss import score_label_positions_only
from training.model import load_training_base
from training.runs import Stopwatch, progress_callback, set_seed, training_arguments
from training.config import TrainingConfig
from training.rlhf.data import preference_sources, load_pairs, require_start_adapter
from training.rlhf.dpo import DpoRun, dpo_inputs



NEGATIVE_SOURCES = ("arena_negative", "chat_feedback")  # arena.export's unpaired (KTO) datasets
KTO_COLUMNS = ["prompt", "completion", "label"]


def load_unpaired(settings: Settings, config: TrainingConfig, run_settings):
    """KTO rows: every preference pair (Reddit + arena) as its chosen answer (desirable) and its
    rejected one (undesirable), plus the arena's "both bad" answers (undesirable) and chat
    👍/👎 (desirable/undesirable) when exported; validation: the held-out preference pairs, split
    the same way."""
    from datasets import Dataset, concatenate_datasets

    train, validation, rows = load_pairs(settings, config, run_settings)

    def unpaired(pairs):
        out = {"prompt": [], "completion": [], "label": []}
        for row in pairs:
            for side, label in (("chosen", True), ("rejected", False)):
                out["prompt"].append(row["prompt"])
                out["completion"].append(row[side])
                out["label"].append(label)
        return Dataset.from_dict(out)

    parts = [unpaired(train)]
    system_prompt = settings.get("model.system_prompt", "") or ""
    documents_prompt = system_prompt_with_documents(system_prompt)
    datasets_dir = settings.path("datasets")
    for name in NEGATIVE_SOURCES if config.use_arena_votes else ():
        if not (datasets_dir / name).is_dir():
            continue
        split = load_splits(datasets_dir, name, step_hint="python -m arena export")[TRAIN]
        if len(split):
            parts.append(with_system_prompt(split.select_columns(KTO_COLUMNS), system_prompt, documents_prompt))
            rows[name] = len(split)
    train_rows = concatenate_datasets([part.cast(parts[0].features) for part in parts])
    return train_rows.shuffle(seed=config.seed), unpaired(validation), rows


def prepare_kto(settings: Settings, *, max_steps: int | None = None, output: Path | None = None,
                publish: bool = True) -> DpoRun:
    """KTO (trl's KTOTrainer) from the start adapter, with the DPO run settings (training.dpo:
    learning rate, steps, beta, max_length); the reference is the start adapter's frozen copy.
    KTO estimates its KL term from the other rows of a batch, so a batch holds at least 2 rows."""
    from peft import PeftModel
    from trl import KTOConfig, KTOTrainer

    clock = Stopwatch()
    config = TrainingConfig.from_settings(settings)
    run_settings = dataclasses.replace(config.dpo, batch_size=max(2, config.dpo.batch_size))
    if max_steps is not None:
        run_settings = dataclasses.replace(run_settings, max_steps=max_steps)
    start = require_start_adapter(settings, config)
    fingerprint = dpo_inputs(settings) + "-kto" + (f"-max_steps{max_steps}" if max_steps is not None else "")
    set_seed(config.seed)
    base = load_training_base(settings, config, run_settings)
    policy = PeftModel.from_pretrained(base.model, str(start), adapter_name="default", is_trainable=True)
    train, validation, rows = load_unpaired(settings, config, run_settings)
    print(f"kto: {len(train)} train rows / {len(validation)} validation rows, starting from {start}")
    scratch = tempfile.TemporaryDirectory(prefix="wayfarer-kto-")
    args = training_arguments(KTOConfig, run_settings, Path(scratch.name), config.seed, base.device,
                              base.precision, max_length=run_settings.max_length, beta=run_settings.beta)
    trainer = KTOTrainer(model=policy, args=args, train_dataset=train, eval_dataset=validation,
                         processing_class=base.tokenizer, callbacks=[progress_callback("kto")])
    if base.device == "cpu":  # trl scores every position there: see training/completion_loss.py
        score_label_positions_only(trainer.model.get_base_model())
    for name, param in trainer.model.named_parameters():
        if ".ref." in name:
            param.requires_grad_(False)
    sources = preference_sources(settings, config)
    data = {name: {"path": str(path), "rows": rows.get(name)} for name, path in sources.items()}
    data.update({name: {"rows": rows[name]} for name in NEGATIVE_SOURCES if name in rows})
    data["sampled"] = rows["sampled"]
    return DpoRun(settings, config, run_settings, trainer, start, fingerprint, data, output, clock, scratch,
                  base.precision, publish, method="kto")
