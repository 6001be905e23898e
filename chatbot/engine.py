"""The local engine's public names, where the rest of the project imports them from.

The engine is split one idea per module: sampling options and per-row sampling
(chatbot/sampling.py), prompt building (chatbot/prompts.py), the continuous-batching scheduler
(chatbot/scheduler.py), the decode loop's tensors (chatbot/decode.py), loading the base model
(modeling/base_model.py), the ChatEngine that ties them together (chatbot/local_engine.py), and
the one Engine protocol and factory that the local and the remote engine share
(chatbot/engine_protocol.py), and the one factory (below) every entry point builds its engine with.
"""

from chatbot.engine_protocol import Engine, WholeAnswers
from chatbot.local_engine import ChatEngine
from chatbot.prompts import InputTooLongError
from chatbot.sampling import GenerationError, SamplingConfig
from chatbot.scheduler import BatchLimits, EngineBusyError, EngineStats


def engine_from_settings(settings, *, adapters_dir=None) -> Engine:
    """The configured engine (`inference.backend`): the model in this process, or a server."""
    from chatbot.remote import InferenceConfig, RemoteEngine

    if InferenceConfig.from_settings(settings).backend == "openai":
        return RemoteEngine.from_settings(settings)
    return ChatEngine.from_settings(settings, adapters_dir=adapters_dir)


__all__ = [
    "BatchLimits",
    "ChatEngine",
    "Engine",
    "EngineBusyError",
    "EngineStats",
    "GenerationError",
    "InputTooLongError",
    "SamplingConfig",
    "WholeAnswers",
    "engine_from_settings",
]
