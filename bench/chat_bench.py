"""Chat speed and memory on this machine, one figure per line.

    .venv/bin/python bench/chat_bench.py [--tokens 128] [--threads 2] [--configs nf4,bf16,fp32]

For each weight format of the base model: single-stream tokens/s and time to first token
(greedy, `--tokens` new tokens), then on the default format: an arena battle (two adapters in
one batched pass) against one answer, the adapter switch cost, and the memory of base + four
adapters against the base alone. When llama-cpp-python is installed, the same GGUF through
llama.cpp gives the reference ratio.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from settings import apply_runtime, load_settings  # noqa: E402

QUESTION = [{"role": "user", "content": "Plan three days in Lisbon for a first-time visitor on a mid-range budget."}]
FORMATS = {"nf4": (True, "bfloat16"), "bf16": (False, "bfloat16"), "fp32": (False, "float32")}


def line(name: str, value: float, unit: str, note: str = "") -> None:
    print(f"{name:<44} {value:>10.2f} {unit:<8} {note}".rstrip(), flush=True)


def timed_stream(engine, adapter: str, tokens: int) -> tuple[float, float, int]:
    """(seconds to first piece, total seconds, new tokens) of one greedy answer."""
    start = time.perf_counter()
    first = None
    text = ""
    for piece in engine.generate(QUESTION, adapter, temperature=0, max_new_tokens=tokens, repetition_penalty=1.0):
        first = first or time.perf_counter() - start
        text += piece
    total = time.perf_counter() - start
    return first or total, total, len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])


def make_adapters(settings, root: Path, names: list[str]) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from chatbot.base_model import ModelConfig, prepare_checkpoint

    config = ModelConfig.from_settings(settings)
    checkpoint = prepare_checkpoint(config, settings.path("models"))
    for seed, name in enumerate(names):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
        lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(model, lora).save_pretrained(str(root / name))
        del model


def bench_format(settings, name: str, tokens: int, repeats: int) -> None:
    from chatbot import ChatEngine

    load_in_4bit, dtype = FORMATS[name]
    overrides = {"model": {"load_in_4bit": load_in_4bit, "compute_dtype": dtype, "adapters": []}}
    engine = ChatEngine.from_settings(settings.with_overrides(overrides))
    timed_stream(engine, "base", 8)  # warm-up
    runs = [timed_stream(engine, "base", tokens) for _ in range(repeats)]
    rate = statistics.median(n / total for _, total, n in runs)
    ttft = statistics.median(first for first, _, _ in runs)
    line(f"chat tokens/s [{name}]", rate, "tok/s", f"median of {repeats}, {runs[0][2]} tokens")
    line(f"chat time to first token [{name}]", ttft * 1000, "ms")
    engine.close()
    del engine
    gc.collect()


def bench_adapters(settings, tokens: int, repeats: int) -> None:
    import torch

    from chatbot import ChatEngine

    names = ["qlora", "raft", "rlhf", "extra"]
    with tempfile.TemporaryDirectory() as tmp:
        make_adapters(settings, Path(tmp), names)
        bare = ChatEngine.from_settings(settings.with_overrides({"model": {"adapters": []}}))
        base_bytes = bare._model.get_memory_footprint()
        bare.close()
        del bare
        gc.collect()
        engine = ChatEngine.from_settings(settings.with_overrides({"model": {"adapters": names}}), adapters_dir=Path(tmp))
        all_bytes = sum(p.numel() * p.element_size() for p in engine._model.parameters()) + sum(
            b.numel() * b.element_size() for b in engine._model.buffers()
        )
        line("memory base alone", base_bytes / 2**20, "MiB")
        line("memory base + 4 adapters", all_bytes / 2**20, "MiB", f"ratio {all_bytes / base_bytes:.2f}x")

        engine.complete(QUESTION, "qlora", temperature=0, max_new_tokens=8)
        single = statistics.median(timed_stream(engine, "qlora", tokens)[1] for _ in range(repeats))
        battle_times = []
        for _ in range(repeats):
            start = time.perf_counter()
            engine.complete_rows([(QUESTION, "qlora"), (QUESTION, "raft")], temperature=0, max_new_tokens=tokens, repetition_penalty=1.0)
            battle_times.append(time.perf_counter() - start)
        battle = statistics.median(battle_times)
        line("arena battle, one batched pass", battle, "s", f"{battle / single:.2f}x one answer ({single:.2f} s)")

        # Switch cost: a one-token request alternating adapters vs staying on one.
        def one_token(adapter: str) -> float:
            start = time.perf_counter()
            engine.complete(QUESTION, adapter, temperature=0, max_new_tokens=1)
            return time.perf_counter() - start

        same = statistics.median(one_token("qlora") for _ in range(10))
        switching = statistics.median(one_token(names[i % 2]) for i in range(10))
        line("adapter switch cost", max(0.0, switching - same) * 1000, "ms", "per-call adapter_names, no set_adapter")
        engine.close()
    del torch


def bench_llama_cpp(settings, tokens: int, threads: int) -> None:
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama.cpp reference: skipped (pip install llama-cpp-python to measure it)")
        return
    from settings import resolve_model_ref

    gguf = Path(resolve_model_ref(settings.get("model.base")))
    if gguf.is_dir():
        gguf = gguf / settings.get("model.gguf_file")
    llm = Llama(model_path=str(gguf), n_threads=threads, verbose=False, n_ctx=2048)
    llm.create_chat_completion(messages=QUESTION, max_tokens=8, temperature=0)
    start = time.perf_counter()
    out = llm.create_chat_completion(messages=QUESTION, max_tokens=tokens, temperature=0)
    total = time.perf_counter() - start
    line("chat tokens/s [llama.cpp, same GGUF]", out["usage"]["completion_tokens"] / total, "tok/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default="nf4,bf16,fp32")
    parser.add_argument("--skip-adapters", action="store_true")
    args = parser.parse_args()
    settings = load_settings(overrides={"runtime": {"torch_threads": args.threads}})
    apply_runtime(settings)
    print(f"# profile {settings.profile}, model {settings.get('model.base')}, {args.threads} threads, {args.tokens} new tokens, greedy")
    for name in args.configs.split(","):
        bench_format(settings, name.strip(), args.tokens, args.repeats)
    if not args.skip_adapters:
        bench_adapters(settings, args.tokens, args.repeats)
    bench_llama_cpp(settings, args.tokens, args.threads)


if __name__ == "__main__":
    main()
