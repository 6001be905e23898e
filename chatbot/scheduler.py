"""Continuous batching: which requests join the running batch, and the loop that runs it.

Requests wait in a queue; between two decode steps the worker admits every waiting request that
fits (FIFO, so nobody is overtaken forever), prefills them in one pass and they join the next
step; a row that finished, or whose caller went away (Stop), leaves at once and frees its slot.
All rows of a request are admitted together (an arena battle's two answers start together).
Other work on the model (`call`: teacher-forced scoring, benchmarks) runs on the same worker
between two steps, so that one thread does all of the engine's computing (chatbot/model_thread.py).

Limits, each refused with a clear GenerationError instead of running out of memory:
- `max_batch_rows`: rows decoded together;
- `max_cached_tokens`: key/value cache tokens the batch may hold (rows x the longest row's prompt
  plus max_new_tokens, as slots are padded to the longest); a request that could never fit is
  refused at once, one that fits later waits;
- `max_queued_requests`: requests waiting; beyond it the server is busy.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from chatbot.decode import DecodeBatch, Row, RowSink
from chatbot.sampling import GenerationError, SamplingConfig
from chatbot.streaming import RowTextDecoder

END = object()  # end-of-stream marker on a request's output queue
T = TypeVar("T")


class EngineBusyError(GenerationError):
    """Too many requests are waiting; the caller may retry shortly."""


@dataclasses.dataclass(frozen=True)
class BatchLimits:
    """The `runtime` settings that bound the batch (see wayfarer.yaml, their one source)."""

    max_batch_rows: int
    max_cached_tokens: int
    max_queued_requests: int


@dataclasses.dataclass
class EngineStats:
    """Counters since start."""

    requests: int = 0  # generation requests received (each may hold several rows)
    passes: int = 0  # forward passes of the model: prefills + decode steps
    prefills: int = 0  # prefill passes (the requests admitted at one step boundary share one)
    steps: int = 0  # decode steps (one token for every row of the batch)
    rows: int = 0  # rows admitted
    largest_pass: int = 0  # most rows in one decode step
    mixed_sampling_steps: int = 0  # decode steps whose rows had different sampling options
    refused: int = 0  # requests refused by a limit


@dataclasses.dataclass(eq=False)
class Request:
    """One caller's rows (one per answer, each with its own adapter)."""

    rows: list[list[int]]  # prompt token ids per row
    adapters: list[str]
    sampling: SamplingConfig
    output: queue.Queue = dataclasses.field(default_factory=queue.Queue)  # (row, text), then an error or END
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    _open_rows: int = -1
    _done: bool = False

    @property
    def reserved_per_row(self) -> int:
        return max(len(p) for p in self.rows) + self.sampling.max_new_tokens

    def finish(self, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        if error is not None:
            self.output.put(error)
        self.output.put(END)


class _RequestRow(RowSink):
    """Streams one row's tokens as text into its request's queue."""

    def __init__(self, request: Request, number: int, tokenizer):
        self.request = request
        self.decoder = RowTextDecoder(tokenizer, number, request.output)

    def token(self, token_id: int) -> None:
        self.decoder.put(token_id)

    def end(self) -> None:
        self.decoder.end()
        self.request._open_rows -= 1
        if self.request._open_rows == 0:
            self.request.finish()

    @property
    def cancelled(self) -> bool:
        return self.request.cancelled.is_set()


class Scheduler:
    """The queue of waiting requests and the worker loop over one DecodeBatch."""

    def __init__(self, limits: BatchLimits, stats: EngineStats, tokenizer, *,
                 resolve: Callable[[str], str] = str, after_step: Callable[[], None] | None = None):
        """`resolve`: a request's adapter name -> the loaded slot its rows run on, asked when
        the request is admitted (so after a hot swap, new rows get the new version at the next
        step boundary while running rows keep theirs); `after_step`: called holding the model
        lock after every step (the engine drops adapter versions no row uses any more)."""
        self.limits = limits
        self.stats = stats
        self.tokenizer = tokenizer
        self.resolve = resolve
        self.after_step = after_step
        self._pending: list[Request] = []
        self._jobs: list[tuple[Callable[[], object], Future]] = []  # see call()
        self._condition = threading.Condition()
        self._closed = False

    # ----------------------------------------------------------------------------- callers
    def submit(self, request: Request) -> None:
        """Queue a request, or refuse it with a GenerationError saying why."""
        limits = self.limits
        with self._condition:
            reason = None
            if len(request.rows) > limits.max_batch_rows:
                reason = GenerationError(
                    f"{len(request.rows)} answers at once is more than this server runs together ({limits.max_batch_rows})"
                )
            elif request.reserved_per_row * len(request.rows) > limits.max_cached_tokens:
                reason = GenerationError(
                    f"the conversation and answer need {request.reserved_per_row * len(request.rows)} tokens of "
                    f"cache, more than this server holds ({limits.max_cached_tokens}); please shorten it or ask "
                    "for a shorter answer"
                )
            elif self._closed:
                reason = GenerationError("the engine is closed")
            elif len(self._pending) >= limits.max_queued_requests:
                reason = EngineBusyError(
                    f"the server is busy ({len(self._pending)} requests are waiting); please try again in a moment"
                )
            if reason is not None:
                self.stats.refused += 1
                raise reason
            self._pending.append(request)
            self._condition.notify()

    def call(self, job: Callable[[], T]) -> T:
        """Run `job()` on the worker thread between two steps, holding the model lock, and return
        its result (or raise its error). Other model work (teacher-forced scoring) goes through
        here so that only the worker ever computes with several threads (chatbot/model_thread.py)."""
        future: Future = Future()
        with self._condition:
            if self._closed:
                raise GenerationError("the engine is closed")
            self._jobs.append((job, future))
            self._condition.notify()
        return future.result()

    def close(self) -> None:
        """Let the loop end once the running and waiting requests are answered."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def waiting(self) -> int:
        with self._condition:
            return len(self._pending)

    # ----------------------------------------------------------------------------- worker
    def _admit(self, batch: DecodeBatch) -> list[Request]:
        """Waiting requests that fit in the batch now, oldest first (called holding the lock)."""
        admitted, rows, longest = [], len(batch), max((r.reserved for r in batch.rows), default=0)
        while self._pending:
            request = self._pending[0]
            if request.cancelled.is_set():
                self._pending.pop(0).finish()
                continue
            total, widest = rows + len(request.rows), max(longest, request.reserved_per_row)
            if total > self.limits.max_batch_rows or total * widest > self.limits.max_cached_tokens:
                break  # it waits for rows to leave; nobody behind it jumps the queue
            admitted.append(self._pending.pop(0))
            rows, longest = total, widest
        return admitted

    def run(self, batch: DecodeBatch, model_lock: threading.Lock, *, until_idle: bool = False) -> None:
        """Serve until closed (or, with `until_idle`, until nothing is running or waiting)."""
        while True:
            with self._condition:
                while not len(batch) and not self._pending and not self._jobs:
                    if self._closed or until_idle:
                        return
                    self._condition.wait()
                newcomers = self._admit(batch)
                jobs, self._jobs = self._jobs, []
            with model_lock:
                for job, future in jobs:
                    try:
                        future.set_result(job())
                    except BaseException as err:  # the caller's error, never the worker's
                        future.set_exception(err)
                self._iterate(batch, newcomers)
                if self.after_step is not None:
                    self.after_step()

    def _iterate(self, batch: DecodeBatch, newcomers: list[Request]) -> None:
        """Admit `newcomers`, then one decode step for every row; rows that finish leave."""
        import torch

        with torch.inference_mode():
            batch.leave(batch.finished())  # Stop pressed since the last step
            if newcomers:
                rows = []
                for request in newcomers:
                    request._open_rows = len(request.rows)
                    for number, (prompt, adapter) in enumerate(zip(request.rows, request.adapters)):
                        seed = None if request.sampling.seed is None else request.sampling.seed + number
                        rows.append(Row(prompt, self.resolve(adapter), request.sampling, seed,
                                        _RequestRow(request, number, self.tokenizer)))
                before = len(batch)
                try:
                    batch.join(rows)
                except BaseException as err:  # only the newcomers fail
                    del batch.rows[before:]
                    batch.sampler.keep(list(range(before)))
                    for request in newcomers:
                        request.finish(err)
                    if not batch.rows:
                        batch.clear()
                else:
                    self.stats.prefills += 1
                    self.stats.passes += 1
                    self.stats.rows += len(rows)
                batch.leave(batch.finished())
            if not len(batch):
                return
            try:
                batch.step()
            except BaseException as err:  # a failed step fails every row, never the worker
                owners = {id(r.sink.request): r.sink.request for r in batch.rows}
                batch.clear()
                for request in owners.values():
                    request.finish(err)
                return
            self.stats.steps += 1
            self.stats.passes += 1
            self.stats.largest_pass = max(self.stats.largest_pass, len(batch))
            if len({r.options for r in batch.rows}) > 1:
                self.stats.mixed_sampling_steps += 1
            batch.leave(batch.finished())
