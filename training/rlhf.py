"""Step `rlhf`: learning from human preferences on top of the RAFT adapter.

(a) A reward model: the base checkpoint as a one-score sequence classifier in 4-bit with LoRA,
    trained with trl's RewardTrainer on the preference pairs (Reddit scores) plus every arena
    vote exported so far; its pairwise accuracy on the held-out preference slice is reported.
    Saved as paths.adapters/reward (not served by the chatbot).
(b) DPO (default): the RAFT adapter is loaded as the trainable policy, and trl copies it into a
    frozen "ref" adapter that serves as the reference model, so DPO is anchored to RAFT rather
    than to the bare base. Saved as paths.adapters/rlhf.
(c) `--method online`: GRPO (or RLOO) from the RAFT adapter, answers scored by the reward model.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from modeling.adapters import ADAPTER_CONFIG_FILE, next_adapter_version, publish_adapter_version
from raft import system_prompt_with_documents
from settings import ConfigError, Settings, apply_runtime
from training.adapter_output import (
    TrainingResult,
    build_metadata,
    inputs_fingerprint,
    read_metadata,
    write_adapter,
)
from training.datasets.config import TRAIN, VALIDATION
from training.errors import TrainingError
from training.examples import (
    check_no_golden,
    dataset_fingerprint,
    load_splits,
    sample_rows,
    with_system_prompt,
)
from training.model import load_reward_base, load_training_base, lora_config
from training.runs import (
    Stopwatch,
    final_evaluation,
    loss_summary,
    progress_callback,
    set_seed,
    training_arguments,
)
from training.config import TrainingConfig

REWARD_ADAPTER = "reward"
RLHF_ADAPTER = "rlhf"
ARENA_PREFERENCE = "arena_preference"
PAIR_COLUMNS = ["prompt", "chosen", "rejected"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=["dpo", "online"], default=None,
                        help="dpo (default: training.rlhf_method) or online (GRPO/RLOO with the reward model)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each trainer after this many steps")
    parser.add_argument("--retrain-reward", action="store_true",
                        help="train the reward model again even when it is current")


def run(args: argparse.Namespace, settings: Settings) -> int:
    apply_runtime(settings)
    try:
        results = run_rlhf(settings, method=args.method, max_steps=args.max_steps, retrain_reward=args.retrain_reward)
    except (TrainingError, ConfigError) as err:
        print(f"rlhf: {err}", file=sys.stderr)
        return 2
    for result in results:
        print(result.summary())
    return 0


def run_rlhf(settings: Settings, *, method: str | None = None, max_steps: int | None = None,
             retrain_reward: bool = False) -> list[TrainingResult]:
    """Reward model (unless current), then DPO or online RL; returns what was trained."""
    config = TrainingConfig.from_settings(settings)
    method = method or config.rlhf_method
    require_start_adapter(settings, config)  # refuse before spending minutes on the reward model
    results = []
    reward_dir = settings.path("adapters") / REWARD_ADAPTER
    if retrain_reward or max_steps is not None or not is_current(reward_dir, reward_inputs(settings)[0]):
        results.append(train_reward(settings, max_steps=max_steps))
    else:
        print(f"reward model at {reward_dir} is current (same data and settings): reusing it")
    if method == "dpo":
        results.append(prepare_dpo(settings, max_steps=max_steps).train())
    else:
        results.append(train_online(settings, max_steps=max_steps))
    return results


def is_current(adapter_dir: Path, fingerprint: str) -> bool:
    metadata = read_metadata(adapter_dir)
    return bool(metadata) and metadata.get("inputs_fingerprint") == fingerprint and (
        Path(adapter_dir) / ADAPTER_CONFIG_FILE).exists()


# ------------------------------------------------------------------------------------ data
def _preference_sources(settings: Settings, config: TrainingConfig) -> dict[str, Path]:
    datasets_dir = settings.path("datasets")
    sources = {"preference": datasets_dir / "preference"}
    arena = datasets_dir / ARENA_PREFERENCE
    if config.use_arena_votes and arena.is_dir():
        sources[ARENA_PREFERENCE] = arena
    return sources


def preference_fingerprints(settings: Settings, config: TrainingConfig) -> dict[str, str]:
    return {name: dataset_fingerprint(path) for name, path in _preference_sources(settings, config).items()}


def load_pairs(settings: Settings, config: TrainingConfig, run_settings):
    """Train pairs = Reddit preference pairs + arena votes (when exported); validation = the held-out
    preference slice. The system prompt goes in front of every prompt, as the chatbot serves it."""
    from datasets import concatenate_datasets

    datasets_dir = settings.path("datasets")
    sources = _preference_sources(settings, config)
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


def _data_record(settings, config, fingerprints, rows) -> dict:
    """Per source: path, fingerprint, rows; plus `sampled`: the seeded subsample actually used."""
    sources = _preference_sources(settings, config)
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


def _start_fingerprint(start: Path) -> str | None:
    return (read_metadata(start) or {}).get("inputs_fingerprint")


# ------------------------------------------------------------------------------------ reward model
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
                                processing_class=tokenizer, peft_config=lora_config(config.lora, "SEQ_CLS"),
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
                                  config=config, datasets=_data_record(settings, config, fingerprints, rows),
                                  metrics=metrics, inputs_fingerprint=fingerprint, precision=precision,
                                  extra={"served": False, "task": "sequence-classification (1 score)"})
        target = Path(output) if output else settings.path("adapters") / REWARD_ADAPTER
        write_adapter(target, lambda folder: trainer.model.save_pretrained(str(folder)), metadata, history)
    return TrainingResult(REWARD_ADAPTER, REWARD_ADAPTER, target, metadata, clock.seconds)


# ------------------------------------------------------------------------------------ DPO
def dpo_inputs(settings: Settings) -> str:
    config = TrainingConfig.from_settings(settings)
    start = settings.path("adapters") / config.rlhf_start_adapter
    return inputs_fingerprint(settings, "dpo", config, config.dpo, preference_fingerprints(settings, config),
                              extra={"start_adapter": config.rlhf_start_adapter,
                                     "start_fingerprint": _start_fingerprint(start)})


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

    def train(self) -> TrainingResult:
        try:
            self.trainer.train()
            final = final_evaluation(self.trainer)
            history = list(self.trainer.state.log_history)
            accuracy = [e["eval_rewards/accuracies"] for e in history if "eval_rewards/accuracies" in e]  # DPO only
            metrics = {**loss_summary(history), "eval_loss_after": float(final["eval_loss"]),
                       "preference_accuracy_before": accuracy[0] if accuracy else None,
                       "preference_accuracy": accuracy[-1] if accuracy else None,
                       "train_pairs": len(self.trainer.train_dataset), "eval_pairs": len(self.trainer.eval_dataset),
                       "steps": self.trainer.state.global_step, "train_seconds": round(self.clock.seconds, 1)}
            metadata = build_metadata(
                settings=self.settings, method=self.method, name=RLHF_ADAPTER, run=self.run_settings, config=self.config,
                datasets=self.data, metrics=metrics, inputs_fingerprint=self.fingerprint, precision=self.precision,
                extra={"start_adapter": {"name": self.config.rlhf_start_adapter, "path": str(self.start),
                                         "inputs_fingerprint": _start_fingerprint(self.start)},
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
                              base.precision, max_length=run_settings.max_length, beta=run_settings.beta)
    trainer = DPOTrainer(model=policy, args=args, train_dataset=train, eval_dataset=validation,
                         processing_class=base.tokenizer, callbacks=[progress_callback("dpo")])
    if "ref" not in trainer.model.peft_config:
        raise TrainingError("trl did not create the frozen reference adapter; DPO would be anchored to the bare base")
    for name, param in trainer.model.named_parameters():
        if ".ref." in name:
            param.requires_grad_(False)  # the reference never moves (trl only reads it under no_grad)
    data = _data_record(settings, config, preference_fingerprints(settings, config), rows)
    return DpoRun(settings, config, run_settings, trainer, start, fingerprint, data, output, clock, scratch,
                  base.precision, publish)


# ------------------------------------------------------------------------------------ KTO
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
    for name, param in trainer.model.named_parameters():
        if ".ref." in name:
            param.requires_grad_(False)
    sources = _preference_sources(settings, config)
    data = {name: {"path": str(path), "rows": rows.get(name)} for name, path in sources.items()}
    data.update({name: {"rows": rows[name]} for name in NEGATIVE_SOURCES if name in rows})
    data["sampled"] = rows["sampled"]
    return DpoRun(settings, config, run_settings, trainer, start, fingerprint, data, output, clock, scratch,
                  base.precision, publish, method="kto")


# ------------------------------------------------------------------------------------ online RL
def online_inputs(settings: Settings) -> str:
    config = TrainingConfig.from_settings(settings)
    adapters = settings.path("adapters")
    return inputs_fingerprint(settings, config.online.trainer, config, config.online,
                              preference_fingerprints(settings, config),
                              extra={"start_fingerprint": _start_fingerprint(adapters / config.rlhf_start_adapter),
                                     "reward_fingerprint": _start_fingerprint(adapters / REWARD_ADAPTER)})


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
            datasets=_data_record(settings, config, preference_fingerprints(settings, config), rows),
            metrics=metrics, inputs_fingerprint=fingerprint,
            extra={"start_adapter": {"name": config.rlhf_start_adapter, "path": str(start)},
                   "reward_model": str(settings.path("adapters") / REWARD_ADAPTER)})
        target = versioned_output(settings, output, metadata)
        write_adapter(target, lambda folder: trainer.model.save_pretrained(str(folder), selected_adapters=["default"]),
                      metadata, history)
        if output is None:
            publish_adapter_version(target.parent, int(target.name))
    return TrainingResult(RLHF_ADAPTER, run_settings.trainer, target, metadata, clock.seconds)
