"""(a) The reward model: the base as a one-score sequence classifier with LoRA, trl's RewardTrainer."""


from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from modeling.adapters import ADAPTER_CONFIG_FILE
from settings import Settings
from training.adapter_output import TrainingResult, build_metadata, inputs_fingerprint, write_adapter
from training.datasets.config import TRAIN, VALIDATION
from training.errors import TrainingError
from training.model import load_reward_base, lora_config
from training.runs import (
    Stopwatch,
    final_evaluation,
    loss_summary,
    progress_callback,
    set_seed,
    training_arguments,
)
from training.config import TrainingConfig
from training.rlhf.data import REWARD_ADAPTER, data_record, load_pairs, preference_fingerprints



def reward_inputs(settings: Settings) -> tuple[str, dict[str, str]]:
    config = TrainingConfig.from_settings(settings)
    fingerprints = preference_fingerprints(settings, config)
    return inputs_fingerprint(settings, REWARD_ADAPTER, config, config.reward, fingerprints), fingerprints


class RewardScorer:
    """Scores an answer to a conversation with the trained reward model (higher = preferred)."""

    def __init__(self, model, tokenizer, device: str, max_length: int = 1024):
        self.model, self.tokenizer, self.device, self.max_length = model, tokenizer, device, max_length

    @classmethod
    def load(cls, settings: Settings, reward_dir: Path | None = None) -> "RewardScorer":
        from peft import PeftModel

        config = TrainingConfig.from_settings(settings)
        reward_dir = Path(reward_dir or settings.path("adapters") / REWARD_ADAPTER)
        if not (reward_dir / ADAPTER_CONFIG_FILE).exists():
            raise TrainingError(f"no reward model at {reward_dir}; train it with `python -m training rlhf`")
        model, tokenizer, device, _ = load_reward_base(settings, config, config.reward)
        model = PeftModel.from_pretrained(model, str(reward_dir), is_trainable=False)
        model.eval()
        return cls(model, tokenizer, device, config.reward.max_length)

    def score(self, prompt: list[dict], completion: list[dict]) -> float:
        import torch

        ids = self.tokenizer.apply_chat_template(list(prompt) + list(completion), tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)[-self.max_length:]
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=self.device)).logits
        return float(logits[0, 0])


def train_reward(settings: Settings, *, max_steps: int | None = None, output: Path | None = None) -> TrainingResult:
    from trl import RewardConfig, RewardTrainer

    clock = Stopwatch()
    config = TrainingConfig.from_settings(settings)
    run_settings = config.reward
    if max_steps is not None:
        run_settings = dataclasses.replace(run_settings, max_steps=max_steps)
    fingerprint, fingerprints = reward_inputs(settings)
    if max_steps is not None:
        fingerprint = f"{fingerprint}-max_steps{max_steps}"
    set_seed(config.seed)
    model, tokenizer, device, precision = load_reward_base(settings, config, run_settings)
    train, validation, rows = load_pairs(settings, config, run_settings)
    print(f"reward: {len(train)} train pairs / {len(validation)} validation pairs "
          f"(a seeded sample: {rows['sampled']}; sources: {sorted(set(rows) - {'sampled'})}); "
          f"{precision.to_dict()['recipe']} ({precision.reason})")
    with tempfile.TemporaryDirectory(prefix="wayfarer-reward-") as scratch:
        args = training_arguments(RewardConfig, run_settings, Path(scratch), config.seed, device, precision,
                                  max_length=run_settings.max_length)
        trainer = RewardTrainer(model=model, args=args, train_dataset=train, eval_dataset=validation,
                                processing_class=tokenizer, peft_config=lora_config(config.lora, model, "SEQ_CLS"),
                                callbacks=[progress_callback(REWARD_ADAPTER)])
        dropped = {TRAIN: len(train) - len(trainer.train_dataset), VALIDATION: len(validation) - len(trainer.eval_dataset)}
        print(f"reward: pairs longer than max_length={run_settings.max_length} dropped by trl: "
              f"{dropped[TRAIN]} train, {dropped[VALIDATION]} validation")
        rows["dropped_too_long"] = dropped
        if precision.quantization == "nf4" and not precision.autocast:
            # trl casts every trainable parameter of a 4-bit model to bf16 (QLoRA); LoRA layers cast
            # their input, but the new score head is a plain Linear that meets the fp32 hidden
            # states of the (upcast) final norm. Without bf16 autocast it must stay fp32.
            for name, param in trainer.model.named_parameters():
                if "modules_to_save" in name and param.requires_grad:
                    param.data = param.data.float()
        if not len(trainer.train_dataset) or not len(trainer.eval_dataset):
            raise TrainingError(f"no preference pair fits training.reward.max_length={run_settings.max_length}")
        trainer.train()
        final = final_evaluation(trainer)
        history = list(trainer.state.log_history)
        accuracy = [e["eval_accuracy"] for e in history if "eval_accuracy" in e]
        metrics = {**loss_summary(history), "eval_loss_after": float(final["eval_loss"]),
                   "pairwise_accuracy_before": accuracy[0] if accuracy else None,
                   "pairwise_accuracy": float(final.get("eval_accuracy", float("nan"))),
                   "train_pairs": len(trainer.train_dataset), "eval_pairs": len(trainer.eval_dataset),
                   "steps": trainer.state.global_step, "train_seconds": round(clock.seconds, 1)}
        metadata = build_metadata(settings=settings, method=REWARD_ADAPTER, name=REWARD_ADAPTER, run=run_settings,
                                  config=config, datasets=data_record(settings, config, fingerprints, rows),
                                  metrics=metrics, inputs_fingerprint=fingerprint, precision=precision,
                                  extra={"served": False, "task": "sequence-classification (1 score)"})
        target = Path(output) if output else settings.path("adapters") / REWARD_ADAPTER
        write_adapter(target, lambda folder: trainer.model.save_pretrained(str(folder)), metadata, history)
    return TrainingResult(REWARD_ADAPTER, REWARD_ADAPTER, target, metadata, clock.seconds)
