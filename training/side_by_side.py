"""Train the two supervised adapters (qlora and raft) at once on a CPU, each in its own process
with half the threads, instead of one after the other with all of them.

Why: a 135M model's matmuls are too small to keep two cores busy from one process (per-op
dispatch, the optimizer and the data collator are single-threaded). Measured on the 2-vCPU Xeon
with AMX, bf16 autocast: one RAFT step took 2.28 s with 2 threads and 3.4 s with 1 thread while a
second 1-thread job ran beside it, so two 1-thread jobs do 1.34x the work of one 2-thread job.
In a whole first run the gain was smaller: both adapters in 1,786 s against 1,974 s one after
the other (1.1x), qlora ending 340 s before raft, hence the hand-over below.

When one run ends, the other takes every thread from its next optimizer step on (the two
methods rarely take the same time: RAFT rows hold documents and are twice as long).

The processes are spawned (not forked: torch's thread pools do not survive a fork) and return
only what the pipeline prints and records: a summary line and the wall seconds. An error in one
is raised in the parent once both have ended, so the other adapter is kept.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

from settings import Settings


@dataclasses.dataclass(frozen=True)
class SideBySideRun:
    method: str
    summary: str
    seconds: float


def _all_threads(settings: Settings) -> int:
    return settings.config.runtime.torch_threads or os.cpu_count() or 1


def side_by_side_threads(settings: Settings) -> int:
    """Threads for each of two side-by-side runs (0 when there are too few cores to split)."""
    return _all_threads(settings) // 2


def _take_freed_threads(method: str, freed, all_threads: int):
    """A trainer callback: once the other run has ended (`freed` is set), use every thread."""
    import torch
    from transformers import TrainerCallback

    class TakeFreedThreads(TrainerCallback):
        taken = False

        def on_step_begin(self, args, state, control, **kwargs):
            if not self.taken and freed.is_set():
                torch.set_num_threads(all_threads)
                self.taken = True
                print(f"{method}: the other run has ended; {all_threads} threads from step {state.global_step + 1}")

    return TakeFreedThreads()


def _train_one(settings: Settings, method: str, threads: int, all_threads: int, freed) -> SideBySideRun:
    import torch

    from settings import apply_runtime
    from training.sft import train_sft

    started = time.monotonic()
    try:
        apply_runtime(settings)
        torch.set_num_threads(threads)
        result = train_sft(settings, method, callbacks=[_take_freed_threads(method, freed, all_threads)])
    finally:
        freed.set()  # ended or failed: its threads are free
    return SideBySideRun(method, result.summary(), time.monotonic() - started)


def train_side_by_side(settings: Settings, methods: tuple[str, str]) -> list[SideBySideRun]:
    """Train both methods at once; returns their runs in the order given. Raises the first
    method's error (by the order given) after both have finished or failed."""
    threads = side_by_side_threads(settings)
    if threads < 1:
        raise ValueError("side-by-side training needs at least 2 threads")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(max_workers=len(methods), mp_context=context) as pool:
        freed = manager.Event()
        futures = [pool.submit(_train_one, settings, method, threads, _all_threads(settings), freed)
                   for method in methods]
        errors = [future.exception() for future in futures]  # waits for both
    for error in errors:
        if error is not None:
            raise error
    return [future.result() for future in futures]
