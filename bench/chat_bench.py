"""Chat speed and memory on this machine, one figure per line.

    .venv/bin/python bench/chat_bench.py [--tokens 128] [--threads 2] [--configs int8,fp32,...]

1. For each weight format of the base model: single-stream tokens/s and time to first token
   (greedy, `--tokens` new tokens, a short question), with the engine's own decode loop; and
   transformers' `model.generate` on the configured format (what the engine used before).
2. On the configured format: prompt reading; time to first token of a RAG turn, retrieval
   included; `--users` users arriving `--arrival-gap-s` apart (continuous batching: total tokens/s
   against one stream, p95 time to first token against an idle engine's); an arena battle (two
   adapters started together) against one answer; the adapter switch cost; the memory of base +
   four adapters against the base alone.
3. When llama-cpp-python is installed (requirements-bench.txt, `make bench LLAMA_CPP=1`), the same
   GGUF through llama.cpp in a child process (a crash there cannot take this bench down), and
   every tokens/s figure's ratio to it, same machine, same run.
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
    "int8": ("int8", "float32"),  # int8 weights (modeling/int8.py), fp32 activations
    "int4": ("int4", "float32"),  # GGUF Q4_1's 4-bit form (modeling/int4.py), fp32 activations
    "bf16": ("none", "bfloat16"),
    "fp32": ("none", "float32"),
}
RATES: dict[str, float] = {}  # every tokens/s figure of this run, for the ratios to llama.cpp


def line(name: str, value: float, unit: str, note: str = "") -> None:
    print(f"{name:<56} {value:>10.2f} {unit:<8} {note}".rstrip(), flush=True)
    if unit == "tok/s":
        RATES[name] = value


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

    from modeling.base_model import ModelConfig, prepare_checkpoint

    config = ModelConfig.from_settings(settings)
    checkpoint = prepare_checkpoint(config, settings.path("models"))
    recipe = settings.section("training")["lora"]  # the adapters the pipeline would train
    for seed, name in enumerate(names):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
        lora = LoraConfig(r=recipe["r"], lora_alpha=recipe["alpha"], target_modules=recipe["target_modules"], init_lora_weights=False)
        get_peft_model(model, lora).save_pretrained(str(root / name))
        del model


def bench_format(settings, name: str, tokens: int, repeats: int) -> None:
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
    if name == configured_format(settings):
        bench_hf_generate(engine, name, tokens, repeats)
    engine.close()
    del engine
    gc.collect()


def configured_format(settings) -> str | None:
    from chatbot.calibration import resolve_quantization

    pair = (resolve_quantization(settings).quantization, settings.get("model.compute_dtype"))
    return next((name for name, value in FORMATS.items() if value == pair), None)


def bench_hf_generate(engine, name: str, tokens: int, repeats: int) -> None:
    """transformers' generate on the same model: the per-step cost the engine's own loop removes."""
    import torch

    ids = torch.tensor([engine.build_prompt(QUESTION)])

    def generate_rates() -> list[float]:
        rates = []
        with torch.inference_mode():
            for _ in range(repeats):
                start = time.perf_counter()
                out = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                            min_new_tokens=tokens, do_sample=False,
                                            pad_token_id=engine.tokenizer.pad_token_id)
                rates.append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - start))
        return rates

    rates = engine.run_on_model_thread(generate_rates)  # with the threads the engine's own loop has
    line(f"chat tokens/s [{name}, transformers generate]", statistics.median(rates), "tok/s", "the engine before its own loop")


def bench_adapters(settings, tokens: int, repeats: int) -> None:
    import torch

    from chatbot import ChatEngine

    names = ["qlora", "raft", "rlhf", "extra"]
    with tempfile.TemporaryDirectory() as tmp:
        make_adapters(settings, Path(tmp), names)
        bare = ChatEngine.from_settings(settings.with_overrides({"model": {"adapters": []}}))
        base_bytes = bare.model.get_memory_footprint()
        bare.close()
        del bare
        gc.collect()
        engine = ChatEngine.from_settings(settings.with_overrides({"model": {"adapters": names}}), adapters_dir=Path(tmp))
        all_bytes = sum(p.numel() * p.element_size() for p in engine.model.parameters()) + sum(
            b.numel() * b.element_size() for b in engine.model.buffers()
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
        line("arena battle, two rows started together", battle, "s", f"{battle / single:.2f}x one answer ({single:.2f} s)")

        # Switch cost. Nothing is switched: every pass names each row's adapter. The only work a
        # new adapter mix causes is building its row masks (once per mix, cached): time that for
        # every packed layer, and compare short requests alternating adapters with same-adapter ones.
        from modeling.multi_lora import packed_layers

        packs = packed_layers(engine.model)
        for pack in packs:
            pack.clear_masks()
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


def bench_concurrent_users(settings, users: int, tokens: int, gap_s: float) -> None:
    """`users` different questions arriving `gap_s` apart, continuously batched: total tokens/s
    against one stream alone, and time to first token against an idle engine's."""
    import threading

    from chatbot import ChatEngine

    questions = [[{"role": "user", "content": q}] for q in (
        "What should I pack for Iceland in October?", "Is the Japan Rail Pass still worth it?",
        "How many days do I need in Rome?", "Tips for a first solo trip to Vietnam?",
        "Best way from Budapest to Vienna?", "Where to see the northern lights cheaply?",
        "How to avoid tourist traps in Paris?", "Is Patagonia doable on a budget?")] * 4
    questions = questions[:users]
    engine = ChatEngine.from_settings(settings.with_overrides({"model": {"adapters": []}}))
    options = {"temperature": 0, "max_new_tokens": tokens, "repetition_penalty": 1.0}

    def ask(messages, delay, results, index):
        time.sleep(delay)
        start = time.perf_counter()
        first, text = None, ""
        for piece in engine.generate(messages, "base", **options):
            first = first or time.perf_counter()
            text += piece
        end = time.perf_counter()
        results[index] = (start, first - start, end, len(engine.tokenizer(text, add_special_tokens=False)["input_ids"]))

    engine.complete(questions[0], "base", temperature=0, max_new_tokens=4)
    alone = [None] * users
    for index, messages in enumerate(questions):  # one at a time: idle time to first token, one stream's rate
        ask(messages, 0, alone, index)
    idle_ttft = statistics.median(r[1] for r in alone)
    one_stream = statistics.median(r[3] / (r[2] - r[0]) for r in alone)
    results = [None] * users
    threads = [threading.Thread(target=ask, args=(m, i * gap_s, results, i)) for i, m in enumerate(questions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    span = max(r[2] for r in results) - min(r[0] for r in results)
    total = sum(r[3] for r in results) / span
    ttfts = sorted(r[1] for r in results)
    p95 = ttfts[min(len(ttfts) - 1, int(round(0.95 * (len(ttfts) - 1))))]
    line("one stream alone, tokens/s", one_stream, "tok/s", f"idle time to first token {idle_ttft * 1000:.0f} ms")
    line(f"{users} users {gap_s:g} s apart, total tokens/s", total, "tok/s",
         f"{total / one_stream:.2f}x one stream (goal >= 4x); largest step {engine.stats.largest_pass} rows")
    line(f"{users} users {gap_s:g} s apart, p95 time to first token", p95 * 1000, "ms",
         f"{p95 / idle_ttft:.2f}x idle (goal <= 2x)")
    engine.close()


# A RAG-sized prompt (about 1,300 tokens) for the prompt-reading figure, the same text for both.
LONG_PROMPT = [{"role": "user", "content": " ".join(
    ["Lisbon tips from r/travel: ride tram 28 early, buy a Viva Viagem card, skip the Santa Justa queue,"
     " eat pasteis de nata in Belem, and walk Alfama at sunset for the views."] * 26
) + " Which of these tips matter most for a three day visit?"}]
def bench_prompt_reading(settings) -> None:
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
    name = engine.quantization
    rate = count / statistics.median(times)
    line(f"prompt reading tokens/s [{name}]", rate, "tok/s", f"{count}-token prompt, first token in {statistics.median(times):.2f} s")
    engine.close()


def llama_cpp_child(gguf: str, tokens: int, threads: int) -> None:
    """In the child process: llama.cpp's decode and prompt-reading rates, as one JSON line."""
    import json

    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_threads=threads, verbose=False, n_ctx=2048)
    llm.create_chat_completion(messages=QUESTION, max_tokens=8, temperature=0)
    start = time.perf_counter()
    out = llm.create_chat_completion(messages=QUESTION, max_tokens=tokens, temperature=0)
    decode = out["usage"]["completion_tokens"] / (time.perf_counter() - start)
    times = []
    for _ in range(2):
        llm.reset()  # no prefix reuse between runs: read the whole prompt each time
        start = time.perf_counter()
        out = llm.create_chat_completion(messages=LONG_PROMPT, max_tokens=1, temperature=0)
        times.append(time.perf_counter() - start)
    print(json.dumps({"decode": decode, "prompt": out["usage"]["prompt_tokens"] / min(times),
                      "prompt_tokens": out["usage"]["prompt_tokens"]}))


def bench_llama_cpp(settings, tokens: int, threads: int) -> None:
    """The same GGUF through llama.cpp (in its own process), and every tokens/s figure's ratio to it."""
    import importlib.util
    import json
    import subprocess

    if importlib.util.find_spec("llama_cpp") is None:
        print("llama.cpp reference: skipped (make bench LLAMA_CPP=1 builds llama-cpp-python to measure it)")
        return
    from settings import resolve_model_ref

    gguf = Path(resolve_model_ref(settings.get("model.base")))
    if gguf.is_dir():
        gguf = gguf / settings.get("model.gguf_file")
    child = subprocess.run([sys.executable, __file__, "--llama-cpp-child", str(gguf), "--tokens", str(tokens),
                            "--threads", str(threads)], capture_output=True, text=True, timeout=900)
    if child.returncode != 0:
        print(f"llama.cpp reference: failed in its process (exit {child.returncode}): {child.stderr.strip()[-300:]}")
        return
    reference = json.loads(child.stdout.strip().splitlines()[-1])
    ours = dict(RATES)
    line("chat tokens/s [llama.cpp, same GGUF]", reference["decode"], "tok/s", "the reference")
    line("prompt reading tokens/s [llama.cpp]", reference["prompt"], "tok/s", f"{reference['prompt_tokens']}-token prompt")
    for name, rate in ours.items():
        basis = reference["prompt"] if name.startswith("prompt reading") else reference["decode"]
        print(f"  ratio to llama.cpp: {rate / basis:6.2f}x  {name}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default=",".join(FORMATS))
    parser.add_argument("--users", type=int, default=8, help="users for the continuous-batching figure")
    parser.add_argument("--arrival-gap-s", type=float, default=0.5, help="seconds between their arrivals")
    parser.add_argument("--skip-adapters", action="store_true")
    parser.add_argument("--llama-cpp-child", metavar="GGUF", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.llama_cpp_child:
        llama_cpp_child(args.llama_cpp_child, args.tokens, args.threads)
        return
    settings = load_settings(overrides={"runtime": {"torch_threads": args.threads}})
    apply_runtime(settings)
    print(
        f"# profile {settings.profile}, model {settings.get('model.base')} ({settings.get('model.quantization')}, "
        f"{settings.get('model.compute_dtype')}), {args.threads} threads, {args.tokens} new tokens, greedy"
    )
    for name in args.configs.split(","):
        bench_format(settings, name.strip(), args.tokens, args.repeats)
    bench_prompt_reading(settings)
    bench_rag_first_token(settings, args.repeats)
    bench_concurrent_users(settings, args.users, args.tokens, args.arrival_gap_s)
    if not args.skip_adapters:
        bench_adapters(settings, args.tokens, args.repeats)
    bench_llama_cpp(settings, args.tokens, args.threads)


if __name__ == "__main__":
    main()
