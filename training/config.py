"""The `training` section of wayfarer.yaml as dataclasses (one per method), plus its hash.

`local` and `gpu` profiles override the section; unknown keys are refused, so a typo in a
hyper-parameter fails loudly instead of silently training with a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from settings import ConfigError, Settings, build_dataclass

ONLINE_METHODS = ("grpo", "rloo")
RLHF_METHODS = ("dpo", "online")
TRAINING_QUANTIZATIONS = ("nf4", "none")
COMPUTE_DTYPES = ("auto", "bfloat16", "float32", "float16")
ATTENTIONS = ("eager", "sdpa")


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: int
    dropout: float
    target_modules: str | tuple[str, ...]
    top_layers: int | None  # LoRA on the top N decoder layers only; None: on every layer


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Hyper-parameters shared by every trainer (one block per method in the YAML)."""

    learning_rate: float
    epochs: float
    max_steps: int  # > 0 overrides epochs
    batch_size: int
    grad_accumulation: int
    max_length: int  # tokens of prompt + answer
    eval_steps: int
    logging_steps: int
    max_train_rows: int | None  # null: every row (local runs use a seeded sample)
    max_eval_rows: int | None
    warmup_ratio: float
    lr_scheduler: str
    optimizer: str
    bf16: bool  # mixed precision (GPU); CPUs without bf16 units are faster without
    gradient_checkpointing: bool
    weight_decay: float

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.batch_size < 1 or self.grad_accumulation < 1:
            raise ConfigError("training: learning_rate must be > 0, batch_size and grad_accumulation >= 1")
        if self.max_length < 32:
            raise ConfigError("training: max_length must be at least 32 tokens")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ConfigError("training: set epochs > 0 or max_steps > 0")
        for name in ("max_train_rows", "max_eval_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"training: {name} must be at least 1 or null")


@dataclasses.dataclass(frozen=True)
class DpoSettings(RunSettings):
    beta: float  # strength of the pull towards the reference (RAFT) model


@dataclasses.dataclass(frozen=True)
class OnlineSettings(RunSettings):
    trainer: str  # grpo or rloo
    num_generations: int  # sampled answers per prompt, compared with each other
    max_completion_length: int
    temperature: float
    beta: float  # KL penalty towards the reference; 0 skips the reference model

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.trainer not in ONLINE_METHODS:
            raise ConfigError(f"training.online.trainer must be one of {ONLINE_METHODS}")
        if self.num_generations < 2:
            raise ConfigError("training.online.num_generations must be at least 2 (answers are compared)")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    seed: int
    compute_dtype: str | None  # bfloat16, float32, auto (bf16 when the hardware has bf16 units)
                                        # or null (model.compute_dtype); see training.precision.training_precision
    quantization: str  # base weights while training: nf4 (QLoRA) or none (float32 + LoRA)
    attention: str  # transformers' attn_implementation while training (recorded in the adapter)
    side_by_side_sft: bool  # the pipeline trains qlora and raft at once on a CPU (training/side_by_side.py)
    rlhf_method: str  # dpo (default, stable on small data) or online
    rlhf_start_adapter: str  # RLHF starts from (and, for DPO, is anchored to) this adapter
    use_arena_votes: bool  # add datasets/arena_preference to the reward and DPO training data
    min_answer_tokens: int  # rows whose prompt leaves fewer answer tokens in max_length are dropped
    lora: LoraSettings
    qlora: RunSettings
    raft: RunSettings
    reward: RunSettings
    dpo: DpoSettings
    online: OnlineSettings

    def __post_init__(self) -> None:
        if self.rlhf_method not in RLHF_METHODS:
            raise ConfigError(f"training.rlhf_method must be one of {RLHF_METHODS}")
        if self.quantization not in TRAINING_QUANTIZATIONS:
            raise ConfigError(f"training.quantization must be one of {TRAINING_QUANTIZATIONS}")
        if self.compute_dtype not in (None, *COMPUTE_DTYPES):
            raise ConfigError(f"training.compute_dtype must be null or one of {COMPUTE_DTYPES}")
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"training.attention must be one of {ATTENTIONS}")

    @classmethod
    def from_settings(cls, settings: Settings) -> "TrainingConfig":
        section = settings.section("training")  # as written (checked by settings.schema): hashes stay stable
        if section["seed"] is None:
            section["seed"] = settings.config.runtime.seed
        lora = section["lora"]
        if isinstance(lora["target_modules"], list):
            lora["target_modules"] = tuple(lora["target_modules"])
        nested = {"lora": LoraSettings, "qlora": RunSettings, "raft": RunSettings, "reward": RunSettings,
                  "dpo": DpoSettings, "online": OnlineSettings}
        for key, kind in nested.items():
            section[key] = build_dataclass(kind, section[key])
        return build_dataclass(cls, section)

    def method(self, name: str) -> RunSettings:
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_hash(value: Any) -> str:
    """A short stable hash of any JSON-able value (configs, fingerprints)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
