"""The base model loaded for training (QLoRA's 4-bit base or float32, frozen, LoRA on top):
the same checkpoint and loader as serving (modeling/), in the training precision."""

from __future__ import annotations

import dataclasses

from modeling.base_model import LoadedBase, ModelConfig, load_base
from settings import Settings
from training.config import LoraSettings, RunSettings, TrainingConfig
from training.errors import TrainingError
from training.precision import Precision, training_precision


def training_model_config(settings: Settings, config: TrainingConfig, precision: Precision) -> ModelConfig:
    """The served model's config with the training dtype: the 4-bit matmul dtype for nf4,
    float32 weights (autocast does the rest) without quantization."""
    dtype = precision.compute_dtype if precision.quantization == "nf4" else "float32"
    return dataclasses.replace(ModelConfig.from_settings(settings), compute_dtype=dtype)


def _prepare_for_training(model, precision: Precision, run: RunSettings):
    if precision.quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        # Freezes the quantized weights and keeps norms in fp32: the QLoRA paper's recipe.
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=run.gradient_checkpointing)
    for param in model.parameters():
        param.requires_grad_(False)
    if run.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def load_training_base(settings: Settings, config: TrainingConfig, run: RunSettings) -> LoadedBase:
    """The base model as training.quantization says: 4-bit NF4 with double quantization (QLoRA)
    or float32, ready for LoRA training. `loaded.precision` says which."""
    precision = training_precision(settings, config, run)
    loaded = load_base(training_model_config(settings, config, precision), settings.path("models"),
                       quantization=precision.quantization, attn_implementation=precision.attention)
    loaded.model = _prepare_for_training(loaded.model, precision, run)
    loaded.precision = precision
    return loaded


def load_reward_base(settings: Settings, config: TrainingConfig, run: RunSettings):
    """The same base checkpoint as a sequence classifier (one score), loaded like the others."""
    from transformers import AutoModelForSequenceClassification

    precision = training_precision(settings, config, run)
    loaded = load_base(
        training_model_config(settings, config, precision), settings.path("models"),
        quantization=precision.quantization, model_class=AutoModelForSequenceClassification, num_labels=1,
        attn_implementation=precision.attention,
    )
    model, tokenizer = loaded.model, loaded.tokenizer
    model.config.pad_token_id = tokenizer.pad_token_id
    model = _prepare_for_training(model, precision, run)
    return model, tokenizer, loaded.device, precision


def lora_config(lora: LoraSettings, model, task_type: str = "CAUSAL_LM"):
    """peft's LoraConfig for `lora` on `model`. With `top_layers`, LoRA sits on the top decoder
    layers only: nothing below them needs a gradient, so autograd's backward stops there (a
    step's cost falls with the layers it skips)."""
    import torch
    from peft import LoraConfig

    target = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    layers = {}
    if lora.top_layers is not None:
        num_layers = model.config.get_text_config().num_hidden_layers
        if not 1 <= lora.top_layers <= num_layers:
            raise TrainingError(f"training.lora.top_layers is {lora.top_layers}; this model has {num_layers} "
                                f"decoder layers (use 1..{num_layers}, or null for every layer)")
        layers = {"layers_to_transform": list(range(num_layers - lora.top_layers, num_layers)),
                  "layers_pattern": "layers"}  # the ModuleList name in HF decoders (model.layers.N)
        if target == "all-linear":  # peft takes a layer list only with named targets: name them
            target = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                             if isinstance(module, torch.nn.Linear) and ".layers." in name})
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target,
                      bias="none", task_type=task_type, **layers)
