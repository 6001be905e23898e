"""ChatEngine: one base model in this process, named adapters on it, continuous batching.

peft's active adapter is global state on the model, so the engine owns the model from a single
worker thread and selects the adapter per row (`adapter_names`, packed by modeling/multi_lora.py),
never with `set_adapter`. Requests are continuously batched (chatbot/scheduler.py): a request
that arrives while others are being answered is prefilled and joins the running batch at the
next step, each row with its own adapter, sampling options, seed and length; a finished or
stopped row leaves at once. Decoding on a CPU or a GPU is bound by reading the weights, so a step
of eight rows costs little more than a step of one: under load, users share steps instead of
queueing behind each other, and an idle engine starts a request at once.

On a CPU the worker is the only thread of the process that computes with several OpenMP threads:
the model is loaded and calibrated on a short-lived thread, scoring runs on the worker between
steps, and every other thread keeps to one (chatbot/model_thread.py: with a second pool, decoding
took 2.4x as long).

The decode loop is our own (chatbot/decode.py, which says why): a row's tokens are those of its
solo run up to float rounding (batched matmuls of other shapes may sum in another order; on CPUs
with AVX-512/AMX that is ~1e-4 in the logits, which can flip a late near-tie).

ZeroGPU: on a Space whose GPU is attached only during a `spaces.GPU` call, a long-lived worker
thread would run outside any such call. There the engine generates "inline": each request runs
its own decode loop inside a `gpu_task` function of its own (see chatbot/spaces.py).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from chatbot.calibration import load_serving_base
from chatbot.decode import DecodeBatch
from chatbot.engine_protocol import WholeAnswers
from chatbot.model_thread import claim_cores, on_a_thread_of_its_own, use_cores_here
from chatbot.prompts import build_prompt
from chatbot.sampling import GenerationError, SamplingConfig
from chatbot.scheduler import END, BatchLimits, EngineStats, Request, Scheduler
from chatbot.spaces import gpu_task, on_zero_gpu
from modeling.adapters import (
    BASE_ADAPTER,
    PEFT_BASE_NAME,
    AdapterLoadError,
    attach_adapter,
    check_adapter_dir,
    current_adapter_version,
    versioned_name,
)
from modeling.base_model import LoadedBase, ModelConfig, resolve_device
from modeling.multi_lora import pack_adapters
from settings import Settings

T = TypeVar("T")


class ChatEngine(WholeAnswers):
    """Serve the base model and its adapters by name."""

    def __init__(
        self,
        loaded: LoadedBase,
        *,
        system_prompt: str,
        sampling: SamplingConfig,
        max_batch_rows: int,
        max_cached_tokens: int,
        max_queued_requests: int,
        inline: bool | None = None,
        gpu_duration_s: int | None = None,
        model_threads: int | None = None,
    ):
        """`max_batch_rows`: most rows decoded together (1: one answer at a time);
        `max_cached_tokens` / `max_queued_requests`: see chatbot/scheduler.py.
        `inline`: generate in the caller's call instead of the worker; None = only on ZeroGPU.
        `gpu_duration_s`: ZeroGPU seconds one request may hold the GPU (None: the Space default).
        `model_threads`: on a CPU, the threads the worker computes with, every other thread
        keeping to one (chatbot/model_thread.py); None: claim_cores() decides."""
        self._model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.base_model_id = loaded.model_id
        self.device = loaded.device
        self.quantization = loaded.quantization
        self.quantized = loaded.quantized
        # The dtype the model computes in (for 4-bit layers: bnb_4bit_compute_dtype).
        self._compute_dtype = getattr(loaded.model, "dtype", None)
        self.system_prompt = system_prompt
        self.sampling = sampling
        self._adapters: list[str] = []  # peft adapter names (slots) attached, in load order
        # Hot swap: a served name ("rlhf") -> the slot new rows run on ("rlhf" or "rlhf@4"), and
        # its version (modeling.adapters; 0: a flat folder). Slots replaced by a newer version
        # stay until no row uses them (_drop_retired, after every step).
        self._slots: dict[str, str] = {}
        self._versions: dict[str, int | None] = {}
        self._retiring: list[str] = []
        self._watcher: threading.Thread | None = None
        self.configured_adapters: list[str] = []  # the names refresh_adapters looks for (model.adapters)
        self._closing = threading.Event()
        self.adapter_errors: dict[str, str] = {}
        self.limits = BatchLimits(max(1, max_batch_rows), max_cached_tokens, max_queued_requests)
        self.max_batch_rows = self.limits.max_batch_rows
        self.stats = EngineStats()
        self._stats_lock = threading.Lock()  # callers count requests from many threads
        # Held by whoever runs the model (one step at a time), and by load_adapter while it changes it.
        self._model_lock = threading.Lock()
        self._batches: list[DecodeBatch] = []  # live decode batches, told when the model changes
        self.inline = on_zero_gpu() if inline is None else inline
        self._model_threads: int | None = None
        self._scheduler = self._new_scheduler()
        if self.inline:
            # Wrapped once, at start-up: ZeroGPU wants its GPU functions known before launch.
            self._answer_on_gpu = gpu_task(self._answer_inline, duration=gpu_duration_s)
            self._worker = None
        else:
            batch = self._new_batch()
            if self.device == "cpu" and model_threads is None:
                model_threads = claim_cores()
            self._model_threads = model_threads
            self._worker = threading.Thread(
                target=self._serve, args=(batch, model_threads), name="wayfarer-generation", daemon=True
            )
            self._worker.start()

    def _serve(self, batch: DecodeBatch, model_threads: int | None) -> None:
        """The worker: every decode step and scoring pass of this engine runs here."""
        if model_threads is not None:
            use_cores_here(model_threads)
        self._scheduler.run(batch, self._model_lock)

    # ----------------------------------------------------------------------------- set-up
    @classmethod
    def from_settings(cls, settings: Settings, *, adapters_dir: Path | None = None) -> "ChatEngine":
        """Load the configured base model, then every configured adapter that is servable."""
        model_config = ModelConfig.from_settings(settings)
        runtime = settings.config.runtime
        model_threads = None
        if resolve_device(model_config.device) == "cpu":
            # Loaded and calibrated on a thread of its own, so that no thread but the worker
            # keeps a pool of OpenMP threads (chatbot/model_thread.py says why).
            model_threads = claim_cores()
            loaded = on_a_thread_of_its_own(lambda: load_serving_base(settings), model_threads)
        else:
            loaded = load_serving_base(settings)
        engine = cls(
            loaded,
            system_prompt=model_config.system_prompt,
            sampling=SamplingConfig.from_settings(settings),
            max_batch_rows=runtime.max_batch_rows,
            max_cached_tokens=runtime.max_cached_tokens,
            max_queued_requests=runtime.max_queued_requests,
            gpu_duration_s=runtime.zero_gpu_duration_s,
            model_threads=model_threads,
        )
        root = adapters_dir or settings.path("adapters")
        for name in model_config.adapters:
            version, folder = current_adapter_version(root / name)  # the served version, or the flat folder
            try:
                engine.load_adapter(name, folder, version=version)
            except AdapterLoadError:
                pass  # recorded in engine.adapter_errors; the others keep serving
        engine.configured_adapters = list(model_config.adapters)
        if model_config.adapter_poll_s > 0:
            engine.watch_adapters(root, model_config.adapter_poll_s)
        return engine

    def _new_scheduler(self) -> Scheduler:
        return Scheduler(self.limits, self.stats, self.tokenizer, resolve=self._slot_of, after_step=self._drop_retired)

    def _slot_of(self, name: str) -> str:
        """The peft adapter new rows of `name` run on (the base and unknown names as they are)."""
        return self._slots.get(name, name)

    def _new_batch(self) -> DecodeBatch:
        batch = DecodeBatch(self._model, self._eos_token_ids(), BASE_ADAPTER)
        self._batches.append(batch)
        return batch

    def load_adapter(self, name: str, path: Path, *, version: int | None = None) -> None:
        """Check and attach an adapter folder; on failure record the reason and re-raise.
        `version`: which version of `name` the folder is (modeling.adapters), if versioned."""
        if name == BASE_ADAPTER or name == PEFT_BASE_NAME or "@" in name:
            raise AdapterLoadError(f"'{name}' is reserved (the bare base model, or a version's slot name)")
        try:
            with self._model_lock:
                if name in self._slots:
                    raise AdapterLoadError(f"adapter '{name}' is already loaded (swap_adapter loads a new version)")
                self._attach(name, name, Path(path))
                self._slots[name] = name
                self._versions[name] = version
        except AdapterLoadError as err:
            self.adapter_errors[name] = str(err)
            raise
        self.adapter_errors.pop(name, None)

    def _attach(self, name: str, slot: str, path: Path) -> None:
        """Check `path` and attach it as peft adapter `slot` (holding the model lock)."""
        check_adapter_dir(name, path, self._model, self.base_model_id)
        self._model = attach_adapter(self._model, slot, path, dtype=self._compute_dtype)
        self._model.eval()
        self._adapters.append(slot)
        self._repack()

    def _repack(self) -> None:
        # All adapters side by side in each layer: a batch of rows with mixed adapters
        # costs two small matmuls per layer instead of peft's loop over adapters.
        pack_adapters(self._model, self._adapters)
        for batch in self._batches:
            batch.set_model(self._model)

    def swap_adapter(self, name: str, path: Path, version: int) -> bool:
        """Hot swap: serve `version` of `name` from `path` without a restart. It is attached as a
        new packed slot (`name@version`); requests admitted from the next step boundary on run on
        it, rows already running finish on the old slot, which is dropped once no row uses it.
        A folder that fails its checks is refused (AdapterLoadError) and the old version keeps
        serving. Returns False when that version is already served."""
        if name not in self._slots:
            self.load_adapter(name, path, version=version)
            return True
        slot = f"{name}@{int(version)}"
        with self._model_lock:
            if self._versions.get(name) == version:
                return False
            if slot in self._adapters:  # swapping back to a version still draining: reuse its slot
                self._retiring.remove(slot)
            else:
                try:
                    self._attach(name, slot, Path(path))
                except AdapterLoadError as err:
                    self.adapter_errors[versioned_name(name, version)] = str(err)
                    raise
            self._retiring.append(self._slots[name])
            self._slots[name], self._versions[name] = slot, version
            # Said under the lock: a row that streamed before this line was admitted on the old version.
            print(f"[wayfarer] {name} version {version} serves new requests; rows under way finish on the old one",
                  file=sys.stderr, flush=True)
            self._drop_retired()
        return True

    def _drop_retired(self) -> None:
        """Detach replaced versions no row runs on any more (holding the model lock)."""
        if not self._retiring:
            return
        running = {row.adapter for batch in self._batches for row in batch.rows}
        unused = [slot for slot in self._retiring if slot not in running]
        if not unused:
            return
        for slot in unused:
            self._retiring.remove(slot)
            self._adapters.remove(slot)
            self._model.delete_adapter(slot)
        self._repack()

    def refresh_adapters(self, root: Path) -> dict[str, int]:
        """Serve the published version (adapters/<name>/CURRENT) of every configured adapter:
        load the ones that appeared, hot-swap the ones with a new version. Returns what changed
        ({name: version}); a version that fails its checks is recorded in adapter_errors."""
        changed = {}
        for name in self.configured_adapters or list(self._slots):
            version, folder = current_adapter_version(Path(root) / name)
            if version is None or (name in self._slots and self._versions.get(name) == version):
                continue
            try:
                if self.swap_adapter(name, folder, version):
                    changed[name] = version
            except AdapterLoadError:
                pass  # recorded; the served version (if any) keeps serving
        return changed

    def watch_adapters(self, root: Path, interval_s: float) -> None:
        """Check for newly published versions every `interval_s` seconds (a daemon thread)."""
        if self._watcher is not None:
            return

        def watch():
            while not self._closing.wait(interval_s):
                self.refresh_adapters(root)

        self._watcher = threading.Thread(target=watch, name="wayfarer-adapter-watch", daemon=True)
        self._watcher.start()

    @property
    def adapter_versions(self) -> dict[str, int | None]:
        """The version each served adapter's new requests get (0: a flat, unversioned folder)."""
        return dict(self._versions)

    @property
    def loaded_slots(self) -> list[str]:
        """Every adapter version attached now, draining ones included (for tests and /doctor)."""
        return list(self._adapters)

    @property
    def adapters(self) -> list[str]:
        """Names that can be served right now: 'base' first, then loaded adapters."""
        return [BASE_ADAPTER, *self._slots]

    @property
    def model(self):
        """The served model (peft-wrapped once an adapter is loaded): for benchmarks and tests."""
        return self._model

    @property
    def running_rows(self) -> int:
        """Rows being decoded right now."""
        return sum(len(batch) for batch in list(self._batches))

    @property
    def waiting_requests(self) -> int:
        """Requests queued for a place in the batch."""
        return self._scheduler.waiting

    @property
    def model_lock(self) -> threading.Lock:
        """Hold it to run the model outside the engine (nothing is generated meanwhile)."""
        return self._model_lock

    def _eos_token_ids(self) -> set[int]:
        configured = getattr(self._model.generation_config, "eos_token_id", None)
        ids = configured if isinstance(configured, list) else [configured]
        return {int(i) for i in ids + [self.tokenizer.eos_token_id] if i is not None}

    # ----------------------------------------------------------------------------- prompts
    def build_prompt(self, messages: list[dict], max_input_tokens: int | None = None) -> list[int]:
        """Token ids from the model's own chat template, dropping the oldest turns to fit."""
        return build_prompt(self.tokenizer, messages, self.system_prompt, max_input_tokens or self.sampling.max_input_tokens)

    # ----------------------------------------------------------------------------- generation
    def generate(self, messages: list[dict], adapter: str = BASE_ADAPTER, **sampling) -> Iterator[str]:
        """Stream the answer to `messages` from `adapter` as text pieces.

        Sampling options (max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
        override the configured defaults; temperature 0 is greedy. Closing the iterator early
        (a user pressing Stop) ends this answer at once; the other rows go on.
        """
        rows = self.generate_rows([(messages, adapter)], **sampling)
        return (piece for _, piece in rows)

    def generate_rows(self, requests: list[tuple[list[dict], str]], **sampling) -> Iterator[tuple[int, str]]:
        """Answer several (messages, adapter) requests started together in the same steps.

        Yields (row, text piece) as the rows advance. Each row applies its own adapter, so an
        arena battle costs about one answer's time, not two.
        """
        if not requests:
            raise GenerationError("nothing to generate")
        for _, adapter in requests:
            self._check_adapter(adapter)
        options = self.sampling.override(**sampling)
        rows = [self.build_prompt(messages, options.max_input_tokens) for messages, _ in requests]
        adapters = [adapter for _, adapter in requests]
        with self._stats_lock:
            self.stats.requests += 1
        if self.inline:
            return self._answer_on_gpu(rows, adapters, options)
        request = Request(rows, adapters, options)
        self._scheduler.submit(request)
        return self._stream(request)

    def _check_adapter(self, adapter: str) -> None:
        if adapter not in self.adapters:
            reason = self.adapter_errors.get(adapter, "it is not configured")
            raise GenerationError(f"model '{adapter}' is not available: {reason}")

    def _answer_inline(self, rows: list[list[int]], adapters: list[str], options: SamplingConfig):
        """One request, decoded within this call (ZeroGPU: within the `spaces.GPU` call, which
        pickles these plain arguments and the yielded pieces across its process boundary)."""
        request = Request(rows, adapters, options)
        scheduler = self._new_scheduler()
        scheduler.submit(request)
        with self._model_lock:
            batch = self._new_batch()
        runner = threading.Thread(
            target=scheduler.run, args=(batch, self._model_lock), kwargs={"until_idle": True}, name="wayfarer-inline", daemon=True
        )
        runner.start()
        try:
            yield from self._stream(request)
        finally:
            request.cancelled.set()
            runner.join()
            with self._model_lock:
                self._batches.remove(batch)

    @staticmethod
    def _stream(request: Request) -> Iterator[tuple[int, str]]:
        try:
            while True:
                item = request.output.get()
                if item is END:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, GenerationError):
                        raise item
                    raise GenerationError(f"generation failed: {item}") from item
                yield item
        finally:
            request.cancelled.set()  # no-op when finished; the row leaves at the next step when abandoned

    # ----------------------------------------------------------------------------- scoring
    def score_rows(self, rows: list[tuple[list[int], str]]) -> list["torch.Tensor"]:
        """Teacher-forced logits: for each (token ids, adapter) row, the float32 logits the model
        gives after every one of its tokens, shape (len(ids), vocab), from ONE batched forward
        pass of transformers' own forward (rows left-padded, each with its own adapter).

        This is what judges read verdict probabilities from (the next token after a prompt is
        `logits[-1]`), and what tests compare rows by, without generating text."""
        import torch

        if not rows:
            raise GenerationError("nothing to score")
        for ids, adapter in rows:
            if not ids:
                raise GenerationError("a row to score has no tokens")
            self._check_adapter(adapter)
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([[pad] * (width - len(ids)) + list(ids) for ids, _ in rows])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in rows])
        # Positions count real tokens only, as generate() does for left-padded rows.
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = {}
        if self._adapters:
            kwargs["adapter_names"] = [PEFT_BASE_NAME if a == BASE_ADAPTER else self._slot_of(a) for _, a in rows]
        def forward() -> list:
            device = self._model.device
            with torch.inference_mode():
                logits = self._model(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    position_ids=position_ids.to(device),
                    use_cache=False,
                    **kwargs,
                ).logits
            return [logits[i, width - len(ids):].float().cpu() for i, (ids, _) in enumerate(rows)]

        return self.run_on_model_thread(forward)

    def run_on_model_thread(self, job: Callable[[], T]) -> T:
        """Run `job()` where this engine computes, holding the model lock, and return its result:
        on the worker between two decode steps (the one thread with several OpenMP threads:
        chatbot/model_thread.py), or in the caller when the engine generates inline. Other work on
        the served model (scoring, benchmarks) runs at the engine's speed this way."""
        if self._worker is None:
            with self._model_lock:
                return job()
        return self._scheduler.call(job)

    @property
    def model_threads(self) -> int | None:
        """The threads the worker computes with on a CPU (None: not set by the engine)."""
        return self._model_threads

    def close(self) -> None:
        """Stop the worker after the requests already running and queued."""
        self._closing.set()
        self._scheduler.close()
        if self._worker is not None:
            self._worker.join(timeout=60)
