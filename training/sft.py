"""Steps `qlora` and `raft`: supervised fine-tuning with LoRA (QLoRA: on the 4-bit base; see training.quantization).

Both use the same recipe on different data: `qlora` on the SFT dataset (question -> best reply),
`raft` on the RAFT dataset (question + documents -> quoted chain-of-thought answer). Rows become
trl's conversational prompt/completion format with the chatbot's system prompt in the prompt, so
the loss is computed on the assistant turn only.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from raft import system_prompt_with_documents
from settings import ConfigError, Settings, apply_runtime
from training.adapter_output import TrainingResult, build_metadata, inputs_fingerprint, write_adapter
from training.completion_loss import completion_loss_trainer
from training.datasets.config import TRAIN, VALIDATION
from training.errors import TrainingError
from training.examples import (
    check_no_golden,
    dataset_fingerprint,
    drop_prompts_too_long,
    load_splits,
    sample_rows,
    to_prompt_completion,
)
from training.model import load_training_base, lora_config
from training.runs import (
    Stopwatch,
    final_evaluation,
    loss_summary,
    progress_callback,
    set_seed,
    training_arguments,
)
from training.config import TrainingConfig

SFT_METHODS = {"qlora": "sft", "raft": "raft"}  # step -> dataset it trains on


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (quick runs)")
    parser.add_argument("--output", type=Path, default=None,
                        help="adapter folder (default: paths.adapters/<step>)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    apply_runtime(settings)
    try:
        result = train_sft(settings, args.step, max_steps=args.max_steps, output=args.output)
    except (TrainingError, ConfigError) as err:
        print(f"{args.step}: {err}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


def sft_inputs(settings: Settings, method: str) -> tuple[str, dict]:
    """The fingerprint of what `method` would train on now, and its dataset record."""
    config = TrainingConfig.from_settings(settings)
    path = settings.path("datasets") / SFT_METHODS[method]
    fingerprint = dataset_fingerprint(path)
    return inputs_fingerprint(settings, method, config, config.method(method), {SFT_METHODS[method]: fingerprint}), {
        "path": str(path), "fingerprint": fingerprint}


def prepare_sft_data(settings: Settings, method: str, tokenizer, config, run_settings):
    """Train/validation rows as prompt/completion, too-long prompts dropped, seeded samples."""
    datasets_dir = settings.path("datasets")
    splits = load_splits(datasets_dir, SFT_METHODS[method])
    check_no_golden(datasets_dir, splits[TRAIN], splits[VALIDATION])
    system_prompt = settings.config.model.system_prompt
    documents_prompt = system_prompt_with_documents(system_prompt)
    prepared, dropped = {}, {}
    for split, limit in ((TRAIN, run_settings.max_train_rows), (VALIDATION, run_settings.max_eval_rows)):
        rows = to_prompt_completion(splits[split], system_prompt, documents_prompt)
        rows, dropped[split] = drop_prompts_too_long(rows, tokenizer, run_settings.max_length, config.min_answer_tokens)
        prepared[split] = sample_rows(rows, limit, config.seed)
        if len(prepared[split]) == 0:
            raise TrainingError(f"no {split} rows of the {SFT_METHODS[method]} dataset fit "
                                f"training.{method}.max_length={run_settings.max_length} tokens; raise it")
    return prepared[TRAIN], prepared[VALIDATION], dropped


def train_sft(settings: Settings, method: str, *, max_steps: int | None = None, output: Path | None = None,
              callbacks: Sequence = ()):
    """Train the `qlora` or `raft` adapter and write it to paths.adapters/<method> (or `output`);
    `callbacks`: more transformers TrainerCallbacks."""
    return prepare_sft(settings, method, max_steps=max_steps, output=output, callbacks=callbacks).train()


@dataclasses.dataclass
class SftRun:
    """An SFT trainer ready to train (its datasets tokenized, labels masked); `train()` writes the adapter."""

    settings: Settings
    method: str
    config: TrainingConfig
    run_settings: object
    trainer: object
    fingerprint: str
    data_record: dict
    output: Path | None
    clock: Stopwatch
    scratch: tempfile.TemporaryDirectory
    precision: object = None

    def train(self) -> TrainingResult:
        trainer, method = self.trainer, self.method
        try:
            trainer.train()
            final = final_evaluation(trainer)
            history = list(trainer.state.log_history)
            metrics = {**loss_summary(history), "eval_loss_after": float(final["eval_loss"]),
                       "train_rows": len(trainer.train_dataset), "eval_rows": len(trainer.eval_dataset),
                       "steps": trainer.state.global_step, "train_seconds": round(self.clock.seconds, 1)}
            metadata = build_metadata(settings=self.settings, method=method, name=method, run=self.run_settings,
                                      config=self.config, datasets={SFT_METHODS[method]: self.data_record},
                                      metrics=metrics, inputs_fingerprint=self.fingerprint,
                                      precision=self.precision)
            target = Path(self.output) if self.output else self.settings.path("adapters") / method
            write_adapter(target, lambda folder: trainer.model.save_pretrained(str(folder)), metadata, history)
        finally:
            self.scratch.cleanup()
        return TrainingResult(name=method, method=method, path=target, metadata=metadata,
                              wall_seconds=self.clock.seconds)


def prepare_sft(settings: Settings, method: str, *, max_steps: int | None = None,
                output: Path | None = None, callbacks: Sequence = ()) -> SftRun:
    """Load the 4-bit base, prepare the rows and build trl's SFTTrainer with LoRA on all linear layers."""
    from trl import SFTConfig, SFTTrainer

    if method not in SFT_METHODS:
        raise TrainingError(f"unknown supervised method {method!r} (have {sorted(SFT_METHODS)})")
    clock = Stopwatch()
    config = TrainingConfig.from_settings(settings)
    run_settings = config.method(method)
    if max_steps is not None:
        run_settings = dataclasses.replace(run_settings, max_steps=max_steps)
    fingerprint, data_record = sft_inputs(settings, method)
    if max_steps is not None:  # a shortened run is not the configured one
        fingerprint = f"{fingerprint}-max_steps{max_steps}"
    set_seed(config.seed)
    base = load_training_base(settings, config, run_settings)
    train, validation, dropped = prepare_sft_data(settings, method, base.tokenizer, config, run_settings)
    # Never silent: the count of rows whose prompt does not fit is printed and recorded, even when 0.
    print(f"{method}: {len(train)} train / {len(validation)} validation rows; dropped because the prompt "
          f"leaves fewer than {config.min_answer_tokens} answer tokens in max_length={run_settings.max_length}: "
          f"{dropped[TRAIN]} train, {dropped[VALIDATION]} validation")
    data_record = {**data_record, "rows": {"train": len(train), "validation": len(validation)},
                   "dropped_too_long": dropped}
    scratch = tempfile.TemporaryDirectory(prefix=f"wayfarer-{method}-")
    args = training_arguments(SFTConfig, run_settings, Path(scratch.name), config.seed, base.device,
                              base.precision, max_length=run_settings.max_length, completion_only_loss=True,
                              packing=False)
    print(f"{method}: {base.precision.to_dict()['recipe']} ({base.precision.reason})")
    # On a CPU trl's fused head scores every position in fp32: see training/completion_loss.py.
    trainer_class = completion_loss_trainer(SFTTrainer) if base.device == "cpu" else SFTTrainer
    trainer = trainer_class(model=base.model, args=args, train_dataset=train, eval_dataset=validation,
                         processing_class=base.tokenizer, peft_config=lora_config(config.lora, base.model),
                         callbacks=[progress_callback(method), *callbacks])
    return SftRun(settings, method, config, run_settings, trainer, fingerprint, data_record, output, clock, scratch,
                  base.precision)
