"""Process-wide runtime switches that must be set before the ML libraries start working."""

from __future__ import annotations

import os

from settings.loader import Settings


def apply_runtime(settings: Settings) -> None:
    """Apply `runtime.*`: offline mode, thread count, analytics off.

    Call it first thing in an entry point: huggingface_hub reads HF_HUB_OFFLINE when it is
    imported, so setting it after `import transformers` would be too late.
    """
    runtime = settings.config.runtime
    if runtime.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    # The app must not phone home: analytics calls also hang on machines without a network.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    if runtime.torch_threads > 0:
        import torch

        torch.set_num_threads(runtime.torch_threads)
