"""One thread of a serving process computes with every core; every other thread computes with one.

Why. PyTorch's CPU build parallelises with GNU OpenMP (libgomp), and libgomp keeps a pool of
helper threads for EACH thread that has ever run a parallel region with more than one thread.
Once the pools hold more threads than there are cores, libgomp stops spinning between parallel
regions and puts its threads to sleep, and every one of a decode step's ~300 small parallel ops
then pays a wake-up. Measured on a 2-vCPU Xeon (AVX-512/AMX, torch 2.13.0+cpu), one int4 decode
step of one row: 16.6 ms on the main thread alone; 40.0 ms on the engine's worker thread once the
main thread had loaded the model with 2 threads (two pools); 16.2 ms on the worker thread when no
other thread ever ran more than one thread. OMP_WAIT_POLICY, GOMP_SPINCOUNT and OMP_PROC_BIND do
not change it; only keeping to one pool does.

So a process that serves the local model on a CPU keeps to one pool:
- `claim_cores()` lowers torch's process-wide thread count to 1 (torch hands it to every thread at
  its first parallel op: the main thread, Gradio's handler threads, the embedder) and returns the
  count the model thread takes instead;
- `use_cores_here(n)` raises the CALLING thread's own count with the thread-local calls libgomp
  and MKL provide (omp_set_num_threads, mkl_set_num_threads_local; torch has no thread-local API);
- `on_a_thread_of_its_own(fn, n)` runs a one-off job (loading and calibrating the model) on a
  short-lived thread set like that: its pool ends with the thread, before the worker's starts.

Nothing here is needed on a GPU, or on a torch without OpenMP; there these calls change nothing.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_claimed_cores: int | None = None  # what the first claim found, for engines made after it
_claim_lock = threading.Lock()


def _loaded_library(fragment: str) -> ctypes.CDLL | None:
    """The already loaded shared library whose file name contains `fragment`, torch's own copy
    first (opening the name instead could load a second libgomp with pools of its own, and other
    wheels, scikit-learn's for one, bring their own libgomp)."""
    import torch

    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    paths = list(dict.fromkeys(fields[-1] for fields in map(str.split, maps)
                               if len(fields) >= 6 and fragment in Path(fields[-1]).name))
    torch_dir = str(Path(torch.__file__).resolve().parent)
    paths.sort(key=lambda path: not str(Path(path).resolve()).startswith(torch_dir))
    for path in paths:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def _openmp_ready() -> bool:
    import torch

    return torch.backends.openmp.is_available()


def claim_cores() -> int:
    """Lower every thread's default to one OpenMP thread; return the count the model thread uses
    (torch's thread count when first called: runtime.torch_threads, or one per core)."""
    import torch

    global _claimed_cores
    with _claim_lock:
        current = torch.get_num_threads()
        if current > 1 or _claimed_cores is None:
            _claimed_cores = current  # apply_runtime may have raised it again since
        if _openmp_ready():
            torch.set_num_threads(1)
        return _claimed_cores


def use_cores_here(threads: int) -> None:
    """Compute with `threads` OpenMP (and MKL) threads on the calling thread only."""
    import torch

    if threads <= 1 or not _openmp_ready():
        return
    torch.get_num_threads()  # torch's lazy per-thread set-up first, or it would reset the count later
    gomp = _loaded_library("libgomp")
    if gomp is None:
        return
    gomp.omp_set_num_threads(ctypes.c_int(threads))
    torch_cpu = _loaded_library("libtorch_cpu")
    # MKL's C entry point (the lower-case symbol is the Fortran one, which takes a pointer).
    if torch_cpu is not None and hasattr(torch_cpu, "MKL_Set_Num_Threads_Local"):
        torch_cpu.MKL_Set_Num_Threads_Local(ctypes.c_int(threads))


def on_a_thread_of_its_own(job: Callable[[], T], threads: int, *, name: str = "wayfarer-model-load") -> T:
    """Run `job()` on a new thread computing with `threads` threads; return its result or raise its error."""
    outcome: dict = {}

    def run():
        try:
            use_cores_here(threads)
            outcome["value"] = job()
        except BaseException as err:  # re-raised in the caller
            outcome["error"] = err

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
