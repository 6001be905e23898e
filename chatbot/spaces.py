"""ZeroGPU support: `gpu_task` marks a function that needs the GPU on a Hugging Face Space.

On a ZeroGPU Space the process holds no GPU; a function wrapped with `spaces.GPU` gets one for
the duration of each call. Everywhere else (a laptop, a dedicated GPU, CI, a Space on fixed
GPU hardware, with or without the `spaces` package installed) `gpu_task` returns the function
unchanged, so the same code runs on every machine and the engine keeps micro-batching.

    from chatbot.spaces import gpu_task

    @gpu_task
    def answer(...): ...

    @gpu_task(duration=120)      # seconds of GPU a single call may take (ZeroGPU's default is 60)
    def long_answer(...): ...

ZeroGPU is told by the Space's own signal, `SPACES_ZERO_GPU`, which Hugging Face sets on ZeroGPU
hardware only (and which the `spaces` package itself reads): `SPACE_ID` alone would also match a
Space on a fixed GPU. There `spaces` must be imported before anything initialises CUDA, because
it replaces torch's CUDA functions with its own and refuses to start after a real CUDA init.
app.py imports it first thing; this module imports it too, as soon as it is itself imported
(before any model is loaded), for the entry points that do not go through app.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

ZERO_GPU_ENV = "SPACES_ZERO_GPU"  # "true" on ZeroGPU hardware, set by Hugging Face
_TRUE = ("1", "t", "true")  # what `spaces.config` accepts as true


def on_zero_gpu(environ: Mapping[str, str] | None = None) -> bool:
    """True on a ZeroGPU Space (`SPACES_ZERO_GPU` is true), whatever else is installed."""
    environ = os.environ if environ is None else environ
    return environ.get(ZERO_GPU_ENV, "").strip().lower() in _TRUE


def _zero_gpu_client():
    try:
        import spaces
    except ImportError as err:
        raise ImportError(
            f"{ZERO_GPU_ENV} says this is a ZeroGPU Space, but its client package `spaces` cannot be "
            f"imported ({err}); add `spaces` to the Space's requirements"
        ) from err
    return spaces


if on_zero_gpu():
    _zero_gpu_client()  # before the engine loads a model: see the module docstring


def gpu_task(fn: Callable | None = None, *, duration: int | None = None):
    """`spaces.GPU(fn)` on a ZeroGPU Space, else `fn` itself. Usable bare or with `duration`."""

    def wrap(function: Callable) -> Callable:
        if not on_zero_gpu():
            return function
        spaces = _zero_gpu_client()
        return spaces.GPU(duration=duration)(function) if duration else spaces.GPU(function)

    return wrap(fn) if fn is not None else wrap
