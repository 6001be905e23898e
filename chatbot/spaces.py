"""ZeroGPU support: `gpu_task` marks a function that needs the GPU on a Hugging Face Space.

On a ZeroGPU Space the process holds no GPU; a function wrapped with `spaces.GPU` gets one for
the duration of each call. Everywhere else (a laptop, a dedicated GPU, CI, a Space on fixed
hardware without the `spaces` package) `gpu_task` returns the function unchanged, so the same
code runs on every machine.

    from chatbot.spaces import gpu_task

    @gpu_task
    def answer(...): ...

    @gpu_task(duration=120)      # seconds of GPU a single call may take (ZeroGPU's default is 60)
    def long_answer(...): ...
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

SPACE_ENV = "SPACE_ID"  # set by Hugging Face on every Space


def on_zero_gpu() -> bool:
    """True on a Space where the `spaces` package (ZeroGPU's client) can be imported."""
    return bool(os.environ.get(SPACE_ENV)) and importlib.util.find_spec("spaces") is not None


def gpu_task(fn: Callable | None = None, *, duration: int | None = None):
    """`spaces.GPU(fn)` on a ZeroGPU Space, else `fn` itself. Usable bare or with `duration`."""

    def wrap(function: Callable) -> Callable:
        if not on_zero_gpu():
            return function
        import spaces  # only on a Space: the package exists nowhere else

        return spaces.GPU(duration=duration)(function) if duration else spaces.GPU(function)

    return wrap(fn) if fn is not None else wrap
