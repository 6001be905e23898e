"""Chat speed and memory on this machine, one figure per line.

    .venv/bin/python bench/chat_bench.py [--tokens 128] [--threads 2] [--configs int8,nf4-fp32,...]

1. For each weight format of the base model: single-stream tokens/s and time to first token
   (greedy, `--tokens` new tokens, a short question).
2. On the configured format: time to first token of a RAG turn, retrieval included (a temporary
   index of the demo corpus unless the configured one exists); concurrent users with and
   without micro-batching; an arena battle (two adapters in one batched pass) against one
   answer; the adapter switch cost; the memory of base + four adapters against the base alone.
3. When llama-cpp-python is installed (requirements-bench.txt), the same GGUF through llama.cpp,
   and every tokens/s figure's ratio to it.
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
# name -> (model.quantization, model.compute_dtype)
FORMATS = {
    "nf4-fp32": ("nf4", "float32"),  # bitsandbytes 4-bit, matmuls in fp32
    "nf4-bf16": ("nf4", "bfloat16"),
    "int8": ("int8", "float32"),  # int8 weights (chatbot/int8.py), fp32 activations
    "bf16": ("none", "bfloat16"),
    "fp32": ("none", "float32"),
}


def line(name: str, value: float, unit: str, note: str = "") -> None:
    print(f"{name:<48} {value:>10.2f} {unit:<8} {note}".rstrip(), flush=True)


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
    recipe = settings.section("training")["lora"]  # the adapters the pipeline would train
    for seed, name in enumerate(names):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
        lora = LoraConfig(r=recipe["r"], lora_alpha=recipe["alpha"], target_modules=recipe["target_modules"], init_lora_weights=False)
        get_peft_model(model, lora).save_pretrained(str(root / name))
        del model


def bench_format(settings, name: str, tokens: int, repeats: int) -> float:
    """Tokens/s of one weight format (also printed, with the time to first token)."""
    from chatbot import ChatEngine

    quantization, dtype = FORMATS[name]
    overrides = {"model": {"quantization": quantization, "compute_dtype": dtype, "adapters": []}}
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
    return rate


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
        recipe = settings.section("training")["lora"]
        line("memory base + 4 adapters", all_bytes / 2**20, "MiB",
             f"ratio {all_bytes / base_bytes:.2f}x (LoRA r={recipe['r']}, {recipe['target_modules']})")

        engine.complete(QUESTION, "qlora", temperature=0, max_new_tokens=8)
        single_times, battle_times = [], []
        for _ in range(repeats):  # interleaved, so a slow spell of the machine hits both alike
            single_times.append(timed_stream(engine, "qlora", tokens)[1])
            start = time.perf_counter()
            engine.complete_rows([(QUESTION, "qlora"), (QUESTION, "raft")], temperature=0, max_new_tokens=tokens, repetition_penalty=1.0)
            battle_times.append(time.perf_counter() - start)
        single, battle = statistics.median(single_times), statistics.median(battle_times)
        line("arena battle, one batched pass", battle, "s", f"{battle / single:.2f}x one answer ({single:.2f} s)")

        # Switch cost. Nothing is switched: every pass names each row's adapter. The only work a
        # new adapter mix causes is building its row masks (once per mix, cached): time that for
        # every packed layer, and compare short requests alternating adapters with same-adapter ones.
        from chatbot.multi_lora import PackedLora

        packs = [m._wayfarer_packed for m in engine._model.modules() if isinstance(getattr(m, "_wayfarer_packed", None), PackedLora)]
        for pack in packs:
            pack._masks.clear()
        start = time.perf_counter()
        for pack in packs:
            pack.mask(["extra", "rlhf"])
        line("adapter switch cost (a new mix, all layers)", (time.perf_counter() - start) * 1000, "ms",
             f"{len(packs)} layers; per-row adapter_names, no set_adapter")

        def one_token(adapter: str) -> float:
            start = time.perf_counter()
            engine.complete([{"role": "user", "content": "Hi"}], adapter, temperature=0, max_new_tokens=1)
            return time.perf_counter() - start

        pairs = [(one_token("qlora"), one_token("qlora"), one_token("raft")) for _ in range(10)]
        extra = statistics.median(switched - same for _, same, switched in pairs)
        line("a request on another adapter than the last", extra * 1000, "ms",
             f"vs the same adapter (median of 10 pairs of {statistics.median(p[1] for p in pairs) * 1000:.0f} ms requests)")
        engine.close()
    del torch


def bench_rag_first_token(settings, repeats: int) -> None:
    """A chat turn as the app runs it: retrieve, build the RAFT prompt, stream the first piece."""
    from chatbot import ChatEngine
    from chatbot.rag import RagChat
    from retrieval import build_index
    from training.ingest import ingest_to_threads

    questions = ["Cheapest way from Narita airport to Shinjuku?", "Is the Lisbon card worth it for three days?",
                 "Best area to stay in Mexico City for a first trip?", "How early should I book Machu Picchu tickets?",
                 "Do I need cash in Vienna or are cards fine?"][:repeats + 1]
    engine = ChatEngine.from_settings(settings.with_overrides({"model": {"adapters": []}}))
    with tempfile.TemporaryDirectory(prefix="wayfarer-bench-") as home:
        rag = RagChat.from_settings(engine, settings)
        where = "configured index"
        if not rag.retrieval_available:
            scratch = settings.with_overrides({"paths": {"home": home}})
            ingest_to_threads(scratch, inputs=[settings.path("demo_corpus")], progress=False)
            build_index(scratch, progress=False)
            rag = RagChat.from_settings(engine, scratch)
            where = "demo index"
        firsts, prompt_tokens = [], []
        for question in questions:
            start = time.perf_counter()
            turn = rag.prepare([{"role": "user", "content": question}], use_retrieval=True)
            stream = engine.generate(turn.messages, "base", temperature=0, max_new_tokens=4)
            next(stream)
            firsts.append(time.perf_counter() - start)
            stream.close()
            prompt_tokens.append(len(engine.build_prompt(turn.messages)))
    firsts, prompt_tokens = firsts[1:], prompt_tokens[1:]  # the first turn warms the embedder up
    line("RAG time to first token (retrieval included)", statistics.median(firsts) * 1000, "ms",
         f"median of {len(firsts)}, {where}, prompts of ~{int(statistics.median(prompt_tokens))} tokens")
    engine.close()


def bench_concurrent_users(settings, users: int, tokens: int) -> None:
    """`users` different questions at once: one pass per request vs micro-batched passes."""
    from concurrent.futures import ThreadPoolExecutor

    from chatbot import ChatEngine

    questions = [[{"role": "user", "content": q}] for q in (
        "What should I pack for Iceland in October?", "Is the Japan Rail Pass still worth it?",
        "How many days do I need in Rome?", "Tips for a first solo trip to Vietnam?",
        "Best way from Budapest to Vienna?", "Where to see the northern lights cheaply?",
        "How to avoid tourist traps in Paris?", "Is Patagonia doable on a budget?")][:users]
    engine = ChatEngine.from_settings(settings.with_overrides({"model": {"adapters": []}}))
    engine.complete(questions[0], "base", temperature=0, max_new_tokens=4)
    for rows in (1, engine.max_batch_rows):
        engine.max_batch_rows = rows
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=users) as pool:
            answers = list(pool.map(lambda q: engine.complete(q, "base", temperature=0, max_new_tokens=tokens,
                                                              repetition_penalty=1.0), questions))
        seconds = time.perf_counter() - start
        produced = sum(len(engine.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        label = "no batching" if rows == 1 else f"micro-batched, up to {rows} rows"
        line(f"{users} concurrent users, total tokens/s [{label}]", produced / seconds, "tok/s", f"all answered in {seconds:.1f} s")
    engine.close()


# A RAG-sized prompt (about 1,300 tokens) for the prompt-reading figure, the same text for both.
LONG_PROMPT = [{"role": "user", "content": " ".join(
    ["Lisbon tips from r/travel: ride tram 28 early, buy a Viva Viagem card, skip the Santa Justa queue,"
     " eat pasteis de nata in Belem, and walk Alfama at sunset for the views."] * 26
) + " Which of these tips matter most for a three day visit?"}]
def bench_prompt_reading(settings) -> dict[str, float]:
    """Tokens/s reading a long prompt (what a RAG turn's first token waits for), configured format."""
    from chatbot import ChatEngine

    engine = ChatEngine.from_settings(settings.with_overrides({"model": {"adapters": []}}))
    count = len(engine.build_prompt(LONG_PROMPT))
    engine.complete(LONG_PROMPT, "base", temperature=0, max_new_tokens=1)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        engine.complete(LONG_PROMPT, "base", temperature=0, max_new_tokens=1)
        times.append(time.perf_counter() - start)
    name = settings.get("model.quantization")
    rate = count / statistics.median(times)
    line(f"prompt reading tokens/s [{name}]", rate, "tok/s", f"{count}-token prompt, first token in {statistics.median(times):.2f} s")
    engine.close()
    return {name: rate}


def bench_llama_cpp(settings, tokens: int, threads: int, rates: dict[str, float], prompt_rates: dict[str, float]) -> None:
    """The same GGUF through llama.cpp, and the ratio of each of our figures to it."""
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
    reference = out["usage"]["completion_tokens"] / total
    line("chat tokens/s [llama.cpp, same GGUF]", reference, "tok/s", "the reference")
    for name, rate in rates.items():
        line(f"ratio to llama.cpp [{name}]", rate / reference, "x")
    times = []
    for _ in range(2):
        llm.reset()  # no prefix reuse between runs: read the whole prompt each time
        start = time.perf_counter()
        out = llm.create_chat_completion(messages=LONG_PROMPT, max_tokens=1, temperature=0)
        times.append(time.perf_counter() - start)
    prompt_rate = out["usage"]["prompt_tokens"] / min(times)
    line("prompt reading tokens/s [llama.cpp]", prompt_rate, "tok/s", f"{out['usage']['prompt_tokens']}-token prompt")
    for name, rate in prompt_rates.items():
        line(f"prompt reading ratio to llama.cpp [{name}]", rate / prompt_rate, "x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default=",".join(FORMATS))
    parser.add_argument("--users", type=int, default=4, help="concurrent users for the micro-batching figure")
    parser.add_argument("--skip-adapters", action="store_true")
    args = parser.parse_args()
    settings = load_settings(overrides={"runtime": {"torch_threads": args.threads}})
    apply_runtime(settings)
    print(
        f"# profile {settings.profile}, model {settings.get('model.base')} ({settings.get('model.quantization')}, "
        f"{settings.get('model.compute_dtype')}), {args.threads} threads, {args.tokens} new tokens, greedy"
    )
    rates = {}  # tokens/s per format, for the ratios to llama.cpp
    for name in args.configs.split(","):
        rates[name.strip()] = bench_format(settings, name.strip(), args.tokens, args.repeats)
    prompt_rates = bench_prompt_reading(settings)
    bench_rag_first_token(settings, args.repeats)
    bench_concurrent_users(settings, args.users, args.tokens // 2)
    if not args.skip_adapters:
        bench_adapters(settings, args.tokens, args.repeats)
    bench_llama_cpp(settings, args.tokens, args.threads, rates, prompt_rates)


if __name__ == "__main__":
    main()
