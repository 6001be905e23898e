"""Serving: one base model (4-bit by default) with named LoRA adapters, streamed generation.

Public surface:
    ChatEngine.from_settings(settings)  load the base model and the configured adapters
    engine.adapters / engine.adapter_errors
    engine.generate(messages, adapter, **sampling) -> iterator of text pieces
    AdapterLoadError, GenerationError, InputTooLongError
"""

from chatbot.engine import ChatEngine, GenerationError, InputTooLongError, SamplingConfig
from modeling.adapters import BASE_ADAPTER, AdapterLoadError

__all__ = [
    "BASE_ADAPTER",
    "AdapterLoadError",
    "ChatEngine",
    "GenerationError",
    "InputTooLongError",
    "SamplingConfig",
]
