"""ChatEngine: one base model per process, named adapters on it, streamed generation.

peft's active adapter is global state on the model, so two requests running at once could
answer with each other's adapter. The engine therefore owns the model from a single worker
thread and selects the adapter per row with peft's `adapter_names` (never `set_adapter`); each
request streams its text back through its own queue.

Micro-batching: requests that arrive while the model is busy wait in the queue; when the worker
is free it takes the oldest and every waiting request with the same sampling options (up to
`max_batch_rows` rows) and answers them all in ONE pass, each row with its own adapter. Decoding
on a CPU or a GPU is bound by reading the weights, so a pass of several rows costs little more
than a pass of one: under load, users share passes instead of queueing behind each other. An
idle engine starts a request at once (no waiting window), so a lone user's latency is unchanged.
Rows of different lengths are left-padded; rows of one length (an arena battle's) give exactly
their solo greedy answers, padded rows up to float rounding in attention (a late near-tie may
resolve differently).

ZeroGPU: on a Space whose GPU is attached only during a `spaces.GPU` call, a long-lived worker
thread would run outside any such call. There the engine generates "inline": each request runs
inside a `gpu_task` function of its own (see chatbot/spaces.py), and is not batched with others.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

from chatbot.adapters import (
    BASE_ADAPTER,
    PEFT_BASE_NAME,
    AdapterLoadError,
    attach_adapter,
    check_adapter_dir,
)
from chatbot.base_model import LoadedBase, ModelConfig, load_base
from chatbot.multi_lora import pack_adapters
from chatbot.spaces import gpu_task, on_zero_gpu
from settings import Settings, build_dataclass

_END = object()  # end-of-stream sentinel on a request's output queue


class GenerationError(RuntimeError):
    """A request could not be answered (bad input or a failure while generating)."""


class InputTooLongError(GenerationError):
    """The newest message alone does not fit the model's input budget."""


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """The `generation` section: defaults every request can override."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.0
    max_input_tokens: int = 2048
    seed: int | None = None

    def override(self, **changes) -> "SamplingConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise GenerationError(f"unknown sampling options: {sorted(unknown)}")
        updated = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        if updated.max_new_tokens < 1:
            raise GenerationError("max_new_tokens must be at least 1")
        if updated.temperature < 0 or not 0 < updated.top_p <= 1:
            raise GenerationError("temperature must be >= 0 and top_p in (0, 1]")
        return updated

    def generate_kwargs(self) -> dict:
        kwargs = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.temperature == 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return kwargs


@dataclasses.dataclass
class _Request:
    """One caller's rows (one per answer, each with its own adapter), answered in one pass,
    possibly together with other callers' requests."""

    rows: list[list[int]]  # prompt token ids per row
    adapters: list[str]
    sampling: SamplingConfig
    output: queue.Queue  # receives (row, text) pieces, then an exception or _END
    cancelled: threading.Event

    def can_share_a_pass_with(self, other: "_Request") -> bool:
        # One pass has one set of sampling options; a seeded request must not share its random
        # stream with anybody, or its answer would depend on who else was asking.
        return self.sampling == other.sampling and self.sampling.seed is None


@dataclasses.dataclass
class EngineStats:
    """Counters since start: how much micro-batching saved (requests / passes)."""

    requests: int = 0  # generation requests received (each may hold several rows)
    passes: int = 0  # model.generate calls
    rows: int = 0  # rows answered in those passes
    largest_pass: int = 0  # most rows in one pass


class WholeAnswers:
    """`complete` / `complete_rows` for any engine that streams with `generate` / `generate_rows`
    (the local ChatEngine and chatbot.remote.RemoteEngine)."""

    def complete(self, messages: list[dict], adapter: str = BASE_ADAPTER, **sampling) -> str:
        """The whole answer at once."""
        return "".join(self.generate(messages, adapter, **sampling))

    def complete_rows(self, requests: list[tuple[list[dict], str]], **sampling) -> list[str]:
        """Whole answers of a batched pass, in request order."""
        answers = [""] * len(requests)
        for row, piece in self.generate_rows(requests, **sampling):
            answers[row] += piece
        return answers


class ChatEngine(WholeAnswers):
    """Serve the base model and its adapters by name."""

    def __init__(
        self,
        loaded: LoadedBase,
        *,
        system_prompt: str = "",
        sampling: SamplingConfig | None = None,
        max_batch_rows: int = 8,
        inline: bool | None = None,
        gpu_duration_s: int | None = None,
    ):
        """`max_batch_rows`: most rows in one micro-batched pass (1: no batching across users).
        `inline`: generate in the caller's call instead of the worker; None = only on ZeroGPU.
        `gpu_duration_s`: ZeroGPU seconds one request may hold the GPU (None: the Space default)."""
        self._model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.base_model_id = loaded.model_id
        self.device = loaded.device
        self.quantized = loaded.quantized
        # The dtype the model computes in (for 4-bit layers: bnb_4bit_compute_dtype).
        self._compute_dtype = getattr(loaded.model, "dtype", None)
        self.system_prompt = system_prompt
        self.sampling = sampling or SamplingConfig()
        self._adapters: list[str] = []  # peft adapter names attached, in load order
        self.adapter_errors: dict[str, str] = {}
        self.max_batch_rows = max(1, max_batch_rows)
        self.stats = EngineStats()
        self._stats_lock = threading.Lock()  # callers count requests from many threads
        self._requests: queue.Queue = queue.Queue()
        self._waiting: list[_Request] = []  # taken off the queue but left for a later pass
        # Held by whoever runs the model, and by load_adapter while it changes it.
        self._model_lock = threading.Lock()
        self.inline = on_zero_gpu() if inline is None else inline
        if self.inline:
            # Wrapped once, at start-up: ZeroGPU wants its GPU functions known before launch.
            self._answer_on_gpu = gpu_task(self._answer_inline, duration=gpu_duration_s)
            self._worker = None
        else:
            self._worker = threading.Thread(target=self._serve, name="wayfarer-generation", daemon=True)
            self._worker.start()

    # ----------------------------------------------------------------------------- set-up
    @classmethod
    def from_settings(cls, settings: Settings, *, adapters_dir: Path | None = None) -> "ChatEngine":
        """Load the configured base model, then every configured adapter that is servable."""
        model_config = ModelConfig.from_settings(settings)
        generation = settings.section("generation")
        runtime = settings.section("runtime")
        engine = cls(
            load_base(model_config, settings.path("models")),
            system_prompt=model_config.system_prompt,
            sampling=build_dataclass(SamplingConfig, generation),
            max_batch_rows=int(runtime.get("max_batch_rows", 8)),
            gpu_duration_s=runtime.get("zero_gpu_duration_s"),
        )
        root = adapters_dir or settings.path("adapters")
        for name in model_config.adapters:
            try:
                engine.load_adapter(name, root / name)
            except AdapterLoadError:
                pass  # recorded in engine.adapter_errors; the others keep serving
        return engine

    def load_adapter(self, name: str, path: Path) -> None:
        """Check and attach an adapter folder; on failure record the reason and re-raise."""
        if name == BASE_ADAPTER or name == PEFT_BASE_NAME:
            raise AdapterLoadError(f"'{name}' is reserved for the bare base model")
        try:
            with self._model_lock:
                if name in self._adapters:
                    raise AdapterLoadError(f"adapter '{name}' is already loaded")
                check_adapter_dir(name, Path(path), self._model, self.base_model_id)
                self._model = attach_adapter(self._model, name, Path(path), dtype=self._compute_dtype)
                self._model.eval()
                self._adapters.append(name)
                # All adapters side by side in each layer: a batch of rows with mixed adapters
                # costs two small matmuls per layer instead of peft's loop over adapters.
                pack_adapters(self._model, self._adapters)
        except AdapterLoadError as err:
            self.adapter_errors[name] = str(err)
            raise
        self.adapter_errors.pop(name, None)

    @property
    def adapters(self) -> list[str]:
        """Names that can be served right now: 'base' first, then loaded adapters."""
        return [BASE_ADAPTER, *self._adapters]

    # ----------------------------------------------------------------------------- prompts
    def build_prompt(self, messages: list[dict], max_input_tokens: int | None = None) -> list[int]:
        """Token ids from the model's own chat template, dropping the oldest turns to fit."""
        budget = max_input_tokens or self.sampling.max_input_tokens
        if not messages or messages[-1].get("role") != "user":
            raise GenerationError("the conversation must end with a user message")
        system = [m for m in messages if m.get("role") == "system"]
        turns = [m for m in messages if m.get("role") != "system"]
        if not system and self.system_prompt:
            system = [{"role": "system", "content": self.system_prompt}]
        while True:
            ids = self.tokenizer.apply_chat_template(system + turns, add_generation_prompt=True, tokenize=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            if len(ids) <= budget:
                return ids
            if len(turns) <= 1:
                raise InputTooLongError(
                    f"the message is too long for the model ({len(ids)} tokens, limit {budget}); please shorten it"
                )
            # Drop the oldest exchange (a user turn and the reply to it), keep the newest question.
            turns = turns[2:] if len(turns) > 2 else turns[-1:]

    # ----------------------------------------------------------------------------- generation
    def generate(self, messages: list[dict], adapter: str = BASE_ADAPTER, **sampling) -> Iterator[str]:
        """Stream the answer to `messages` from `adapter` as text pieces.

        Sampling options (max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
        override the configured defaults; temperature 0 is greedy. Closing the iterator early
        (a user pressing Stop) cancels the generation and frees the model for the next request.
        """
        rows = self.generate_rows([(messages, adapter)], **sampling)
        return (piece for _, piece in rows)

    def generate_rows(self, requests: list[tuple[list[dict], str]], **sampling) -> Iterator[tuple[int, str]]:
        """Answer several (messages, adapter) requests in ONE batched pass of the model.

        Yields (row, text piece) as the rows advance together. peft applies each row's adapter
        to that row only (`adapter_names`), so an arena battle costs about one answer's time,
        not two. With the same prompt on every row no padding is needed and each row's greedy
        output equals its solo run.
        """
        if not requests:
            raise GenerationError("nothing to generate")
        for _, adapter in requests:
            if adapter not in self.adapters:
                reason = self.adapter_errors.get(adapter, "it is not configured")
                raise GenerationError(f"model '{adapter}' is not available: {reason}")
        options = self.sampling.override(**sampling)
        rows = [self.build_prompt(messages, options.max_input_tokens) for messages, _ in requests]
        adapters = [adapter for _, adapter in requests]
        with self._stats_lock:
            self.stats.requests += 1
        if self.inline:
            return self._answer_on_gpu(rows, adapters, options)
        request = _Request(rows, adapters, options, queue.Queue(), threading.Event())
        self._requests.put(request)
        return self._stream(request)

    def _answer_inline(self, rows: list[list[int]], adapters: list[str], options: SamplingConfig):
        """One request, generated within this call (ZeroGPU: within the `spaces.GPU` call, which
        pickles these plain arguments and the yielded pieces across its process boundary)."""
        request = _Request(rows, adapters, options, queue.Queue(), threading.Event())
        runner = threading.Thread(target=self._run_safely, args=([request],), name="wayfarer-inline", daemon=True)
        runner.start()
        try:
            yield from self._stream(request)
        finally:
            request.cancelled.set()
            runner.join()

    @staticmethod
    def _stream(request: _Request) -> Iterator[tuple[int, str]]:
        try:
            while True:
                item = request.output.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, GenerationError):
                        raise item
                    raise GenerationError(f"generation failed: {item}") from item
                yield item
        finally:
            request.cancelled.set()  # no-op when finished; stops the worker when abandoned

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run_safely(batch)

    def _next_batch(self) -> list[_Request] | None:
        """The oldest live request plus every waiting one that can share its pass (None: closed)."""
        while True:
            if self._waiting:
                first = self._waiting.pop(0)
            else:
                first = self._requests.get()
                if first is None:
                    return None
            if not first.cancelled.is_set():
                break
        while True:  # everything queued so far joins the waiting list, in arrival order
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._requests.put(None)  # close() again after this pass
                break
            self._waiting.append(item)
        batch, total, kept = [first], len(first.rows), []
        for request in self._waiting:
            fits = total + len(request.rows) <= self.max_batch_rows
            if request.cancelled.is_set():
                continue
            if fits and first.can_share_a_pass_with(request):
                batch.append(request)
                total += len(request.rows)
            else:
                kept.append(request)
        self._waiting = kept
        return batch

    def _run_safely(self, batch: list[_Request]) -> None:
        try:
            with self._model_lock:
                self._run(batch)
        except BaseException as err:  # one failed pass must never stop the worker
            for request in batch:
                request.output.put(err)
        finally:
            for request in batch:
                request.output.put(_END)

    def _eos_token_ids(self) -> set[int]:
        configured = getattr(self._model.generation_config, "eos_token_id", None)
        ids = configured if isinstance(configured, list) else [configured]
        return {int(i) for i in ids + [self.tokenizer.eos_token_id] if i is not None}

    def _run(self, batch: list[_Request]) -> None:
        """One `model.generate` pass over every row of every request in `batch`."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from chatbot.streaming import BatchQueueStreamer

        # Global row -> (request, its own row number): where each row's text goes.
        targets = [(request, row) for request in batch for row in range(len(request.rows))]
        prompts = [request.rows[row] for request, row in targets]
        adapters = [request.adapters[row] for request, row in targets]

        class _StopWhenCancelled(StoppingCriteria):
            # Per row: a user pressing Stop ends their rows only; the others go on.
            def __call__(self, input_ids, scores, **kwargs):
                return torch.tensor([request.cancelled.is_set() for request, _ in targets], dtype=torch.bool)

        # Left-pad rows of different lengths so every row's last prompt token is aligned.
        width = max(len(ids) for ids in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts])

        sampling = batch[0].sampling  # the same for every request in a batch
        kwargs = sampling.generate_kwargs()
        if self._adapters:
            # Per-row adapter selection: no global set_adapter, so nothing leaks between requests.
            kwargs["adapter_names"] = [PEFT_BASE_NAME if a == BASE_ADAPTER else a for a in adapters]
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        self.stats.passes += 1
        self.stats.rows += len(prompts)
        self.stats.largest_pass = max(self.stats.largest_pass, len(prompts))
        streamer = BatchQueueStreamer(
            self.tokenizer, [(request.output, row) for request, row in targets], self._eos_token_ids()
        )
        with torch.inference_mode():
            self._model.generate(
                input_ids=input_ids.to(self._model.device),
                attention_mask=attention_mask.to(self._model.device),
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_StopWhenCancelled()]),
                pad_token_id=pad,
                **kwargs,
            )

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        if self._worker is not None:
            self._requests.put(None)
            self._worker.join(timeout=60)
