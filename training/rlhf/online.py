"""(c) `--method online`: GRPO (or RLOO) from the start adapter, scored by the reward model."""


from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from modeling.adapters import publish_adapter_version
from settings import Settings
from training.adapter_output import TrainingResult, build_metadata, inputs_fingerprint, write_adapter
from training.model import load_training_base
from training.runs import Stopwatch, loss_summary, set_seed, training_arguments
from training.config import TrainingConfig
from training.rlhf.data import (
    REWARD_ADAPTER,
    RLHF_ADAPTER,
    data_record,
    start_fingerprint,
    load_pairs,
    preference_fingerprints,
    require_start_adapter,
)
from training.rlhf.reward import RewardScorer
from training.rlhf.dpo import versioned_output



def online_inputs(settings: Settings) -> str:
    config = TrainingConfig.from_settings(settings)
    adapters = settings.path("adapters")
    return inputs_fingerprint(settings, config.online.trainer, config, config.online,
                              preference_fingerprints(settings, config),
                              extra={"start_fingerprint": start_fingerprint(adapters / config.rlhf_start_adapter),
                                     "reward_fingerprint": start_fingerprint(adapters / REWARD_ADAPTER)})


def train_online(settings: Settings, *, max_steps: int | None = None, output: Path | None = None) -> TrainingResult:
    """GRPO/RLOO from the start adapter, rewarded by the reward model (a few steps locally)."""
    from peft import PeftModel

    clock = Stopwatch()
    config = TrainingConfig.from_settings(settings)
    run_settings = config.online
    if max_steps is not None:
        run_settings = dataclasses.replace(run_settings, max_steps=max_steps)
    start = require_start_adapter(settings, config)
    fingerprint = online_inputs(settings) + (f"-max_steps{max_steps}" if max_steps is not None else "")
    scorer = RewardScorer.load(settings)
    set_seed(config.seed)
    base = load_training_base(settings, config, run_settings)
    policy = PeftModel.from_pretrained(base.model, str(start), adapter_name="default", is_trainable=True)
    train, _, rows = load_pairs(settings, config, run_settings)
    prompts = train.select_columns(["prompt"])

    def reward_model_score(prompts, completions, **_):
        return [scorer.score(p, c) for p, c in zip(prompts, completions)]

    if run_settings.trainer == "grpo":
        from trl import GRPOConfig as OnlineConfig, GRPOTrainer as OnlineTrainer
    else:
        from trl import RLOOConfig as OnlineConfig, RLOOTrainer as OnlineTrainer
    with tempfile.TemporaryDirectory(prefix="wayfarer-online-") as scratch:
        args = training_arguments(
            OnlineConfig, run_settings, Path(scratch), config.seed, base.device, base.precision,
            num_generations=run_settings.num_generations, max_completion_length=run_settings.max_completion_length,
            temperature=run_settings.temperature, beta=run_settings.beta,
            # Evaluating means generating: the rewards logged during training show the progress.
            eval_strategy="no", eval_on_start=False)
        trainer = OnlineTrainer(model=policy, reward_funcs=reward_model_score, args=args, train_dataset=prompts,
                                processing_class=base.tokenizer)
        trainer.train()
        history = list(trainer.state.log_history)
        rewards = [float(e["reward"]) for e in history if "reward" in e]
        metrics = {**loss_summary(history), "reward_first": rewards[0] if rewards else None,
                   "reward_last": rewards[-1] if rewards else None, "prompts": len(prompts),
                   "steps": trainer.state.global_step, "train_seconds": round(clock.seconds, 1)}
        metadata = build_metadata(
            settings=settings, method=run_settings.trainer, name=RLHF_ADAPTER, run=run_settings, config=config,
            datasets=data_record(settings, config, preference_fingerprints(settings, config), rows),
            metrics=metrics, inputs_fingerprint=fingerprint,
            extra={"start_adapter": {"name": config.rlhf_start_adapter, "path": str(start)},
                   "reward_model": str(settings.path("adapters") / REWARD_ADAPTER)})
        target = versioned_output(settings, output, metadata)
        write_adapter(target, lambda folder: trainer.model.save_pretrained(str(folder), selected_adapters=["default"]),
                      metadata, history)
        if output is None:
            publish_adapter_version(target.parent, int(target.name))
    return TrainingResult(RLHF_ADAPTER, run_settings.trainer, target, metadata, clock.seconds)
