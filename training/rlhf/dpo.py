"""(b) DPO from the start adapter (RAFT), which trl copies into the frozen reference."""


from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

from modeling.adapters import next_adapter_version, publish_adapter_version
from settings import Settings
from training.adapter_output import TrainingResult, build_metadata, inputs_fingerprint, write_adapter
from training.errors import TrainingError
from training.completion_loss import score_label_positions_only
from training.model import load_training_base
from training.runs import (
    Stopwatch,
    final_evaluation,
    loss_summary,
    progress_callback,
    set_seed,
    training_arguments,
)
from training.config import TrainingConfig
from training.rlhf.data import (
    RLHF_ADAPTER,
    data_record,
    start_fingerprint,
    load_pairs,
    preference_fingerprints,
    require_start_adapter,
)



# DPO's evaluation before training is known without running it: the policy starts as the start
# adapter and the reference is its frozen copy, so every log-ratio is 0 (up to rounding where the
# policy trains in another dtype), every reward margin 0 (no pair is ranked right: trl counts
# chosen > rejected) and the loss is -log sigmoid(0) = ln 2 (tests/test_training.py measures it).
# Recorded as the step-0 point instead of two passes (policy and reference) over the validation
# pairs: the first run's DPO took 142 s against 176 s on the 2-vCPU AMX Xeon, the same adapter.
DPO_EVAL_AT_START = {"eval_loss": math.log(2), "eval_rewards/accuracies": 0.0, "eval_rewards/margins": 0.0,
                     "epoch": 0.0, "step": 0}


def dpo_inputs(settings: Settings) -> str:
    config = TrainingConfig.from_settings(settings)
    start = settings.path("adapters") / config.rlhf_start_adapter
    return inputs_fingerprint(settings, "dpo", config, config.dpo, preference_fingerprints(settings, config),
                              extra={"start_adapter": config.rlhf_start_adapter,
                                     "start_fingerprint": start_fingerprint(start)})


@dataclasses.dataclass
class DpoRun:
    """A DPO trainer ready to train: the policy is the start adapter ("default"), the reference
    its frozen copy ("ref"). Inspect `trainer` before calling `train()`."""

    settings: Settings
    config: TrainingConfig
    run_settings: object
    trainer: object
    start: Path
    fingerprint: str
    data: dict
    output: Path | None
    clock: Stopwatch
    scratch: tempfile.TemporaryDirectory
    precision: object = None
    publish: bool = True  # without `output`: make the new version the served one once written
    method: str = "dpo"  # or "kto" (prepare_kto: the same run, trl's KTOTrainer)
    eval_at_start: dict | None = None  # the step-0 eval point when it is known without running it

    def train(self) -> TrainingResult:
        try:
            self.trainer.train()
            final = final_evaluation(self.trainer)
            history = list(self.trainer.state.log_history)
            if self.eval_at_start is not None:  # the trainer did not evaluate at step 0
                history.insert(0, dict(self.eval_at_start))
            accuracy = [e["eval_rewards/accuracies"] for e in history if "eval_rewards/accuracies" in e]  # DPO only
            metrics = {**loss_summary(history), "eval_loss_after": float(final["eval_loss"]),
                       "preference_accuracy_before": accuracy[0] if accuracy else None,
                       "preference_accuracy": accuracy[-1] if accuracy else None,
                       "train_pairs": len(self.trainer.train_dataset), "eval_pairs": len(self.trainer.eval_dataset),
                       "steps": self.trainer.state.global_step, "train_seconds": round(self.clock.seconds, 1)}
            if self.eval_at_start is not None:
                metrics["eval_before"] = "by construction: the policy is the reference at step 0"
            metadata = build_metadata(
                settings=self.settings, method=self.method, name=RLHF_ADAPTER, run=self.run_settings, config=self.config,
                datasets=self.data, metrics=metrics, inputs_fingerprint=self.fingerprint, precision=self.precision,
                extra={"start_adapter": {"name": self.config.rlhf_start_adapter, "path": str(self.start),
                                         "inputs_fingerprint": start_fingerprint(self.start)},
                       "reference": f"frozen copy of the '{self.config.rlhf_start_adapter}' adapter"})
            target = versioned_output(self.settings, self.output, metadata)
            # Only the policy: the "ref" copy is the start adapter, already saved on its own.
            write_adapter(target, lambda folder: self.trainer.model.save_pretrained(
                str(folder), selected_adapters=["default"]), metadata, history)
            if self.output is None and self.publish:
                publish_adapter_version(target.parent, int(target.name))
        finally:
            self.scratch.cleanup()
        return TrainingResult(RLHF_ADAPTER, self.method, target, metadata, self.clock.seconds)


def versioned_output(settings: Settings, output: Path | None, metadata: dict) -> Path:
    """Where a served RLHF adapter is written: `output` when given, else the next version folder
    `adapters/rlhf/<version>/` (modeling.adapters: published by rewriting `rlhf/CURRENT`)."""
    if output is not None:
        return Path(output)
    folder = settings.path("adapters") / RLHF_ADAPTER
    version = next_adapter_version(folder)
    metadata["version"] = version
    return folder / str(version)


def prepare_dpo(settings: Settings, *, max_steps: int | None = None, output: Path | None = None,
                publish: bool = True) -> DpoRun:
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    clock = Stopwatch()
    config = TrainingConfig.from_settings(settings)
    run_settings = config.dpo
    if max_steps is not None:
        run_settings = dataclasses.replace(run_settings, max_steps=max_steps)
    start = require_start_adapter(settings, config)
    fingerprint = dpo_inputs(settings) + (f"-max_steps{max_steps}" if max_steps is not None else "")
    set_seed(config.seed)
    base = load_training_base(settings, config, run_settings)
    # The start adapter is the trainable policy; with no ref_model, trl adds a copy of it named
    # "ref" and computes the reference log-probs with that copy (trl 1.16 DPOTrainer).
    policy = PeftModel.from_pretrained(base.model, str(start), adapter_name="default", is_trainable=True)
    train, validation, rows = load_pairs(settings, config, run_settings)
    print(f"dpo: {len(train)} train pairs / {len(validation)} validation pairs (a seeded sample: "
          f"{rows['sampled']}), starting from {start}; {base.precision.to_dict()['recipe']} ({base.precision.reason})")
    scratch = tempfile.TemporaryDirectory(prefix="wayfarer-dpo-")
    args = training_arguments(DPOConfig, run_settings, Path(scratch.name), config.seed, base.device,
                              base.precision, max_length=run_settings.max_length, beta=run_settings.beta,
                              eval_on_start=False)  # DPO_EVAL_AT_START
    trainer = DPOTrainer(model=policy, args=args, train_dataset=train, eval_dataset=validation,
                         processing_class=base.tokenizer, callbacks=[progress_callback("dpo")])
    if base.device == "cpu":  # trl scores every position there: see training/completion_loss.py
        score_label_positions_only(trainer.model.get_base_model())
    if "ref" not in trainer.model.peft_config:
        raise TrainingError("trl did not create the frozen reference adapter; DPO would be anchored to the bare base")
    for name, param in trainer.model.named_parameters():
        if ".ref." in name:
            param.requires_grad_(False)  # the reference never moves (trl only reads it under no_grad)
    data = data_record(settings, config, preference_fingerprints(settings, config), rows)
    return DpoRun(settings, config, run_settings, trainer, start, fingerprint, data, output, clock, scratch,
                  base.precision, publish, eval_at_start=DPO_EVAL_AT_START)
