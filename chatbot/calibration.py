"""`model.quantization: auto`: the weight format this machine serves fastest, measured once.

Serving owns this (modeling/ loads a base in a format it is given): the measurement is the
serving engine's decode loop, and training always names its format.

Which format is fastest on a CPU depends on the CPU (int8 x bf16 kernels, AVX-512, AMX, bf16
units) and on the torch build, so instead of guessing from flags the first start times each
candidate on the real model with the engine's own decode loop (chatbot/decode.py): a prompt of
PROMPT_TOKENS tokens read, then DECODE_STEPS single-row steps, ROUNDS times in alternation. The
winner has the shortest typical chat turn (read TURN_PROMPT tokens, write TURN_ANSWER). The choice is cached per machine
(CPU model, core count, torch version, checkpoint, compute dtype, candidates) in `paths.models`,
so later starts only read a small JSON file. A GPU keeps nf4 (QLoRA's format; bitsandbytes' CUDA
kernels). A candidate that fails to load or run here is left out (named in the reason); if every
one fails, the CPU's capabilities decide (int8: PyTorch's int8 kernel runs on every x86-64 and
ARM CPU).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from fsutils import write_text_atomic

CACHE_FILE = "quantization-auto.json"
CPU_CANDIDATES = ("int4", "int8", "none")  # nf4 de-quantizes in a slow kernel on CPUs: never the fastest there
PROMPT_TOKENS, DECODE_STEPS = 128, 12
ROUNDS = 3  # measurements per candidate, alternating; the median counts
TURN_PROMPT, TURN_ANSWER = 512, 128


@dataclasses.dataclass(frozen=True)
class QuantizationChoice:
    quantization: str  # one of modeling.base_model.QUANTIZATIONS
    reason: str  # why, for the app's start-up line and `python -m chatbot doctor`
    figures: dict = dataclasses.field(default_factory=dict)  # format -> {"prefill_tok_s", "decode_tok_s"}


def resolve_quantization(settings):
    """The format `model.quantization` means on this machine, with the reason (a
    QuantizationChoice); `auto` is measured once per machine and cached."""
    from modeling.base_model import AUTO, ModelConfig, resolve_device

    config = ModelConfig.from_settings(settings)
    if config.quantization != AUTO:
        return QuantizationChoice(config.quantization, "configured (model.quantization)")
    return choose_quantization(config, settings.path("models"), resolve_device(config.device))


def load_serving_base(settings):
    """The configured base model (a modeling.base_model.LoadedBase) in the format serving uses
    on this machine (`auto` resolved here)."""
    from modeling.base_model import AUTO, ModelConfig, load_base

    config = ModelConfig.from_settings(settings)
    choice = resolve_quantization(settings)
    if config.quantization == AUTO:
        print(f"[wayfarer] model.quantization auto -> {choice.quantization}: {choice.reason}", file=sys.stderr, flush=True)
    return load_base(config, settings.path("models"), quantization=choice.quantization,
                     quantization_reason=choice.reason if config.quantization == AUTO else "configured")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(checkpoint: str, compute_dtype: str) -> str:
    import torch

    # The candidates are part of the key: a format added later is measured, not skipped.
    return (f"{cpu_model()} | {os.cpu_count()} cores | torch {torch.__version__} | {Path(checkpoint).name} | "
            f"{compute_dtype} | {'/'.join(CPU_CANDIDATES)}")


def _read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _measure(loaded) -> dict:
    """Prefill and decode tokens/s of one loaded base with the engine's decode loop."""
    import torch

    from chatbot.decode import DecodeBatch, Row
    from chatbot.sampling import SamplingConfig

    class Discard:
        cancelled = False

        def token(self, token_id):
            pass

        def end(self):
            pass

    # Greedy and unpenalised: the figures measure the loop, so no sampling option may change them.
    greedy = SamplingConfig(max_new_tokens=DECODE_STEPS + 1, temperature=0, top_p=1.0, top_k=0,
                            repetition_penalty=1.0, repeat_ngram_size=1, max_ngram_repeats=0,
                            max_input_tokens=PROMPT_TOKENS)
    prompt = [int(i) for i in torch.randint(100, 1000, (PROMPT_TOKENS,), generator=torch.Generator().manual_seed(0))]
    with torch.inference_mode():
        batch = DecodeBatch(loaded.model, set(), "base")
        batch.join([Row(prompt[:16], "base", greedy, None, Discard())])  # warm-up
        batch.step()
        batch.clear()
        start = time.perf_counter()
        batch.join([Row(prompt, "base", greedy, None, Discard())])
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(DECODE_STEPS):
            batch.step()
        decode = time.perf_counter() - start
        batch.clear()
    # Unrounded: on a starved machine a rate can be under 0.05 tok/s, and a rounded 0 would divide by zero.
    return {"prefill_tok_s": PROMPT_TOKENS / prefill, "decode_tok_s": DECODE_STEPS / decode}


def choose_quantization(config, models_dir: Path, device: str) -> QuantizationChoice:
    """Resolve `auto` for `config` (a ModelConfig) on `device`; measures once per machine."""
    if device != "cpu":
        return QuantizationChoice("nf4", f"{device}: nf4 (bitsandbytes 4-bit, QLoRA's format)")
    from modeling.base_model import load_base, prepare_checkpoint

    checkpoint = prepare_checkpoint(config, models_dir)
    key = machine_key(checkpoint, config.compute_dtype)
    cache_path = Path(models_dir) / CACHE_FILE
    cached = _read_cache(cache_path).get(key)
    if cached:
        return QuantizationChoice(cached["quantization"], cached["reason"] + " (cached)", cached.get("figures", {}))
    print(f"[wayfarer] model.quantization auto: timing {', '.join(CPU_CANDIDATES)} on this CPU (once)...", file=sys.stderr, flush=True)
    loaded, runs, failures = {}, {}, []
    for candidate in CPU_CANDIDATES:
        try:  # a format this CPU or torch build cannot run is left out, never the start-up
            loaded[candidate] = load_base(dataclasses.replace(config, quantization=candidate), models_dir)
            runs[candidate] = [_measure(loaded[candidate])]
        except Exception as err:  # noqa: BLE001
            loaded.pop(candidate, None)
            failures.append(f"{candidate}: {err}")
    # Rounds alternate the candidates and each keeps its median: on a shared machine a slow
    # spell during one candidate's only run once picked int8 over a int4 that was 20% faster.
    for _ in range(ROUNDS - 1):
        for candidate, base in loaded.items():
            runs[candidate].append(_measure(base))
    del loaded
    figures = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in runs.items()}
    if not figures:
        return QuantizationChoice("int8", f"cpu: int8 (PyTorch's int8 kernel; timing failed: {'; '.join(failures)})")

    def turn_seconds(name: str) -> float:
        f = figures[name]
        return TURN_PROMPT / f["prefill_tok_s"] + TURN_ANSWER / f["decode_tok_s"]

    best = min(figures, key=turn_seconds)
    summary = ", ".join(f"{n}: decode {f['decode_tok_s']:.1f} tok/s, prefill {f['prefill_tok_s']:.1f} tok/s" for n, f in figures.items())
    summary += "".join(f"; {failure} (left out)" for failure in failures)
    choice = QuantizationChoice(best, f"fastest on {cpu_model()} ({summary})", figures)
    entries = _read_cache(cache_path)
    entries[key] = {"quantization": choice.quantization, "reason": choice.reason, "figures": figures}
    try:
        write_text_atomic(cache_path, json.dumps(entries, indent=2))  # two processes at once never half-write it
    except OSError:
        pass  # an unwritable cache only means measuring again next start
    return choice
