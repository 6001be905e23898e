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


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Hyper-parameters shared by every trainer (one block per method in the YAML)."""

    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int = -1                 # > 0 overrides epochs
    batch_size: int = 4
    grad_accumulation: int = 1
    max_length: int = 1024              # tokens of prompt + answer
    eval_steps: int = 50
    logging_steps: int = 10
    max_train_rows: int | None = None   # null: every row (local runs use a seeded sample)
    max_eval_rows: int | None = None
    warmup_ratio: float = 0.0
    lr_scheduler: str = "cosine"
    optimizer: str = "adamw_torch"
    bf16: bool = False                  # mixed precision (GPU); CPUs without bf16 units are faster without
    gradient_checkpointing: bool = False
    weight_decay: float = 0.0

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
    beta: float = 0.1                   # strength of the pull towards the reference (RAFT) model


@dataclasses.dataclass(frozen=True)
class OnlineSettings(RunSettings):
    trainer: str = "grpo"               # grpo or rloo
    num_generations: int = 4            # sampled answers per prompt, compared with each other
    max_completion_length: int = 256
    temperature: float = 0.9
    beta: float = 0.0                   # KL penalty towards the reference; 0 skips the reference model

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.trainer not in ONLINE_METHODS:
            raise ConfigError(f"training.online.trainer must be one of {ONLINE_METHODS}")
        if self.num_generations < 2:
            raise ConfigError("training.online.num_generations must be at least 2 (answers are compared)")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    seed: int = 1234
    compute_dtype: str | None = None    # bfloat16, float32, auto (bf16 when the hardware has bf16 units)
                                        # or null (model.compute_dtype); see training.precision.training_precision
    quantization: str = "nf4"           # base weights while training: nf4 (QLoRA) or none (float32 + LoRA)
    rlhf_method: str = "dpo"            # dpo (default, stable on small data) or online
    rlhf_start_adapter: str = "raft"    # RLHF starts from (and, for DPO, is anchored to) this adapter
    use_arena_votes: bool = True        # add datasets/arena_preference to the reward and DPO training data
    min_answer_tokens: int = 16         # rows whose prompt leaves fewer answer tokens in max_length are dropped
    lora: LoraSettings = LoraSettings()
    qlora: RunSettings = RunSettings()
    raft: RunSettings = RunSettings()
    reward: RunSettings = RunSettings()
    dpo: DpoSettings = DpoSettings()
    online: OnlineSettings = OnlineSettings()

    def __post_init__(self) -> None:
        if self.rlhf_method not in RLHF_METHODS:
            raise ConfigError(f"training.rlhf_method must be one of {RLHF_METHODS}")
        if self.quantization not in TRAINING_QUANTIZATIONS:
            raise ConfigError(f"training.quantization must be one of {TRAINING_QUANTIZATIONS}")
        if self.compute_dtype not in (None, *COMPUTE_DTYPES):
            raise ConfigError(f"training.compute_dtype must be null or one of {COMPUTE_DTYPES}")

    @classmethod
    def from_settings(cls, settings: Settings) -> "TrainingConfig":
        section = settings.section("training")
        if section.get("seed") is None:
            section["seed"] = int(settings.get("runtime.seed", 0))
        nested = {"lora": LoraSettings, "qlora": RunSettings, "raft": RunSettings, "reward": RunSettings,
                  "dpo": DpoSettings, "online": OnlineSettings}
        for key, kind in nested.items():
            value = section.get(key) or {}
            if not isinstance(value, dict):
                raise ConfigError(f"training.{key} must be a mapping")
            if key == "lora" and isinstance(value.get("target_modules"), list):
                value["target_modules"] = tuple(value["target_modules"])
            section[key] = build_dataclass(kind, value)
        return build_dataclass(cls, section)

    def method(self, name: str) -> RunSettings:
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_hash(value: Any) -> str:
    """A short stable hash of any JSON-able value (configs, fingerprints)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
