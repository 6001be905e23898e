"""The chat engine on the real embedded model: 4-bit base, chat template, streaming, adapters."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from chatbot import AdapterLoadError, ChatEngine, GenerationError, InputTooLongError

from tests.conftest import make_lora_adapter
from tests.engine_checks import (
    answered_rows,
    assert_answers_are_greedy_for_their_rows,
    assert_rows_are_their_own,
    common_start,
)

QUESTION = [{"role": "user", "content": "What should I pack for a week in Lisbon in March?"}]
# Raw argmax decoding (no repetition penalty, no n-gram limit): a generated answer can then be
# checked token by token against its own row's teacher-forced logits (tests/engine_checks.py).
GREEDY = {"temperature": 0, "max_new_tokens": 16, "repetition_penalty": 1.0, "max_ngram_repeats": 0}
ADAPTERS = ["qlora", "base", "raft"]


def _next_token_agreement(a, b, ids) -> float:
    """Share of positions where two models predict the same next token for `ids`."""
    import torch

    with torch.inference_mode():
        top_a = a(input_ids=ids).logits.argmax(-1)
        top_b = b(input_ids=ids).logits.argmax(-1)
    return (top_a == top_b).float().mean().item()


@pytest.mark.parametrize("quantization", ["nf4", "int8", "int4"])
def test_quantized_bases_are_small_and_predict_like_the_full_precision_model(settings, quantization):
    """nf4 (bitsandbytes, double quant), int8 (modeling/int8.py) and int4 (modeling/int4.py)
    against the fp32 base: a fraction of the memory, and nearly always the same next token."""
    import bitsandbytes as bnb
    import torch

    from modeling.base_model import ModelConfig, load_base
    from modeling.int4 import Int4Linear
    from modeling.int8 import Int8Linear

    config = ModelConfig.from_settings(settings.with_overrides({"model": {"compute_dtype": "float32"}}))
    full = load_base(config, settings.path("models"), quantization="none")
    small = load_base(config, settings.path("models"), quantization=quantization)
    if quantization == "nf4":
        layers = [m for m in small.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert layers and layers[0].weight.quant_state.quant_type == "nf4"
        assert layers[0].weight.quant_state.nested, "double quantization (nested quant state) is off"
    elif quantization == "int8":
        layers = [m for m in small.model.modules() if isinstance(m, Int8Linear)]
        assert layers and all(layer.weight.dtype == torch.int8 for layer in layers)
        assert isinstance(small.model.lm_head, Int8Linear)
    else:
        from modeling.int4 import block_rows

        if block_rows() is None:  # a CPU or torch whose packed layout modeling/int4.py does not know
            assert not any(isinstance(m, Int4Linear) for m in small.model.modules())
            pytest.skip("this CPU's int4 packed layout is unknown: every layer fell back to int8")
        full_layers = dict(full.model.model.layers.named_modules())
        layers = {n: m for n, m in small.model.model.layers.named_modules() if isinstance(m, Int4Linear)}
        assert len(layers) == 7 * len(small.model.model.layers), "every projection of every decoder layer is 4-bit"
        assert isinstance(small.model.lm_head, Int8Linear), "the head keeps 8 bits (Q8_0 in the GGUF)"
        for name, layer in layers.items():
            # The GGUF's own Q4_1 codes come back: only the kernel's bf16 scales differ from the
            # checkpoint's weights (a 4-bit quantizer of its own would be off by up to 1/30 of a
            # block's range, about 7% of the largest weight).
            weight = full_layers[name].weight
            assert (layer.dequantized(torch.float32) - weight).abs().max() <= 0.004 * weight.abs().max(), name
        x = torch.randn(3, layers["0.mlp.down_proj"].in_features)
        with torch.inference_mode():  # the decode kernel and the prefill's de-quantized weights agree
            kernel = layers["0.mlp.down_proj"](x)
            dense = torch.nn.functional.linear(x, layers["0.mlp.down_proj"].dequantized(torch.float32))
        assert (kernel - dense).abs().max() <= 0.01 * dense.abs().max()
    def layer_bytes(model) -> int:  # the decoder layers' linear weights: what every token reads
        return sum(
            t.numel() * t.element_size()
            for n, t in [*model.model.layers.named_parameters(), *model.model.layers.named_buffers()] if "norm" not in n
        )

    assert layer_bytes(small.model) < {"nf4": 0.3, "int8": 0.3, "int4": 0.17}[quantization] * layer_bytes(full.model)
    text = "Lisbon in March is mild; pack layers, a rain jacket and comfortable shoes for the hills of Alfama."
    ids = torch.tensor([full.tokenizer(text)["input_ids"]])
    agreement = _next_token_agreement(full.model, small.model, ids)
    assert agreement >= {"nf4": 0.6, "int8": 0.9, "int4": 0.9}[quantization]  # int8 and int4 keep the GGUF's bits

    # The decode loop fuses Q, K, V and gate, up into one layer each (modeling/fused.py), whose
    # stacked weights the layers then view: int8 and int4 are fused, nf4 (bitsandbytes) is not,
    # and transformers' own forward over the layers gives bit for bit the logits it gave before.
    from chatbot.decode import ModelRunner

    with torch.inference_mode():
        before = small.model(input_ids=ids).logits
        groups = [g for layer in ModelRunner(small.model).projections for g in layer]
        after = small.model(input_ids=ids).logits
    assert all((g.fused is None) == (quantization == "nf4") for g in groups)
    assert torch.equal(before, after), "fusing changed what the layers compute"


def test_packed_adapters_compute_exactly_what_peft_computes(engine):
    """modeling/multi_lora.py packs every adapter of a layer into two matmuls; the logits for a
    batch mixing adapters (and the bare base) must equal peft's own per-adapter forward."""
    import torch

    from modeling.multi_lora import pack_adapters

    ids = torch.tensor([engine.build_prompt(QUESTION)] * 3)
    names = ["qlora", "__base__", "raft"]
    with engine.model_lock, torch.inference_mode():
        packed = engine.model(input_ids=ids, adapter_names=names).logits
        pack_adapters(engine.model, [])  # peft's own per-adapter forward
        try:
            reference = engine.model(input_ids=ids, adapter_names=names).logits
        finally:
            pack_adapters(engine.model, ["qlora", "raft"])
    assert not torch.allclose(reference[0], reference[1]), "the adapters must change the logits for this to mean anything"
    torch.testing.assert_close(packed, reference, rtol=1e-4, atol=1e-4)


def test_prompt_is_the_models_chat_template_with_the_configured_system_prompt(engine):
    ids = engine.build_prompt(QUESTION)
    text = engine.tokenizer.decode(ids)
    # SmolLM2's template (ChatML): role markers come from the tokenizer, not from our code.
    assert text.startswith("<|im_start|>system\n" + engine.system_prompt)
    assert "<|im_start|>user\nWhat should I pack for a week in Lisbon in March?<|im_end|>" in text
    assert text.rstrip().endswith("<|im_start|>assistant")


def test_old_turns_are_dropped_to_fit_the_input_budget(engine):
    history = []
    for i in range(30):
        history += [
            {"role": "user", "content": f"Question {i} about trains in Japan and the rail pass value."},
            {"role": "assistant", "content": f"Answer {i}: it depends on your itinerary and dates."},
        ]
    history.append({"role": "user", "content": "And the ferry to Miyajima?"})
    ids = engine.build_prompt(history, max_input_tokens=200)
    text = engine.tokenizer.decode(ids)
    assert len(ids) <= 200
    assert "And the ferry to Miyajima?" in text and "Question 0 " not in text
    with pytest.raises(InputTooLongError, match="too long"):
        engine.build_prompt([{"role": "user", "content": "word " * 5000}], max_input_tokens=200)


def test_generation_streams_in_several_chunks(engine):
    chunks = list(engine.generate(QUESTION, "base", **GREEDY))
    assert len(chunks) > 1
    assert "".join(chunks).strip()


def test_greedy_output_is_deterministic_and_a_lora_adapter_changes_it(engine):
    base = engine.complete(QUESTION, "base", **GREEDY)
    assert engine.complete(QUESTION, "base", **GREEDY) == base
    assert engine.complete(QUESTION, "qlora", **GREEDY) != base
    assert engine.complete(QUESTION, "raft", **GREEDY) != engine.complete(QUESTION, "qlora", **GREEDY)


def test_concurrent_requests_for_different_adapters_are_not_mixed_up(engine):
    """Six users asking at once share decode steps in whatever shapes the timing makes, so each
    answer is checked as its own (tests/engine_checks.py), not as its solo text."""
    names = ["base", "qlora", "raft"] * 2
    solo = {name: engine.complete(QUESTION, name, **GREEDY) for name in set(names)}
    assert len(set(solo.values())) == 3, "the three models must answer differently for this test to mean anything"
    start = threading.Barrier(len(names))

    def ask(name):
        start.wait()
        return engine.complete(QUESTION, name, **GREEDY)

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        answers = list(pool.map(ask, names))
    assert_answers_are_greedy_for_their_rows(engine, [(QUESTION, n) for n in names], answers)
    # And the six rows in one forward pass, teacher-forced over the solo answers: exact against
    # the same rows all on one adapter, within rounding of each row alone.
    assert_rows_are_their_own(engine, answered_rows(engine, [(QUESTION, n) for n in names], [solo[n] for n in names]))


def test_a_corrupt_adapter_is_reported_and_the_others_keep_serving(engine):
    assert engine.adapters == ["base", "qlora", "raft"]
    assert "rlhf" in engine.adapter_errors
    assert "corrupt" in engine.adapter_errors["rlhf"]
    with pytest.raises(GenerationError, match="'rlhf' is not available: .*corrupt"):
        engine.generate(QUESTION, "rlhf", **GREEDY)
    assert engine.complete(QUESTION, "qlora", **GREEDY).strip()


def test_bad_adapter_folders_are_refused_before_touching_the_model(engine, settings, tmp_path):
    before = engine.complete(QUESTION, "qlora", **GREEDY)

    with pytest.raises(AdapterLoadError, match="not found .* `python -m training extra`"):
        engine.load_adapter("extra", tmp_path / "missing")

    wrong_base = make_lora_adapter(settings, tmp_path / "wrong-base", seed=3, base_model_id="mistralai/Mistral-7B-Instruct-v0.3")
    with pytest.raises(AdapterLoadError, match="trained on base model 'mistralai/Mistral-7B-Instruct-v0.3'"):
        engine.load_adapter("wrong", wrong_base)

    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(AdapterLoadError, match="no weights"):
        engine.load_adapter("empty", no_weights)

    # An adapter for another architecture (wider layers) must not be injected at all.
    import torch
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]}))
    save_file(
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 4096)},
        str(foreign / "adapter_model.safetensors"),
    )
    with pytest.raises(AdapterLoadError, match="does not fit the base model"):
        engine.load_adapter("foreign", foreign)

    assert engine.adapters == ["base", "qlora", "raft"]
    assert engine.complete(QUESTION, "qlora", **GREEDY) == before


def test_an_abandoned_stream_frees_the_model_for_the_next_request(engine):
    expected = engine.complete(QUESTION, "raft", **GREEDY)
    stream = engine.generate(QUESTION, "base", temperature=0, max_new_tokens=400)
    next(stream)
    stream.close()  # the user pressed Stop
    assert engine.complete(QUESTION, "raft", **GREEDY) == expected


def test_invalid_requests_get_clear_errors(engine):
    with pytest.raises(GenerationError, match="end with a user message"):
        engine.generate([{"role": "assistant", "content": "hi"}], "base")
    with pytest.raises(GenerationError, match="unknown sampling options"):
        engine.generate(QUESTION, "base", beams=3)
    with pytest.raises(GenerationError, match="max_new_tokens"):
        engine.generate(QUESTION, "base", max_new_tokens=0)


def test_one_batched_pass_with_a_different_adapter_per_row_equals_the_solo_runs(engine):
    """Each row of a mixed-adapter batch is exactly the row of a batch all on its adapter, and its
    solo run up to float rounding (teacher-forced over the solo answer); the generated text of
    each row is its own answer (a near-tie late in it may resolve differently than alone)."""
    requests = [(QUESTION, name) for name in ADAPTERS]
    solo = [engine.complete(QUESTION, name, **GREEDY) for name in ADAPTERS]
    assert len(set(solo)) == len(solo), "the adapters must answer differently for a mix-up to show"
    assert_rows_are_their_own(engine, answered_rows(engine, requests, solo))
    batched = engine.complete_rows(requests, **GREEDY)
    assert_answers_are_greedy_for_their_rows(engine, requests, batched)

    pieces = list(engine.generate_rows([(QUESTION, "qlora"), (QUESTION, "raft")], **GREEDY))
    rows = {row for row, _ in pieces}
    assert rows == {0, 1}
    # Both rows advance together in one pass: row 1 has text before row 0 is complete.
    first_of_row1 = next(i for i, (row, _) in enumerate(pieces) if row == 1)
    last_of_row0 = max(i for i, (row, _) in enumerate(pieces) if row == 0)
    assert first_of_row1 < last_of_row0


# ----------------------------------------------------------------------------- micro-batching
QUESTIONS = [
    [{"role": "user", "content": "Is Kyoto worth a day trip from Osaka?"}],
    [{"role": "user", "content": "How do I get from Rome Fiumicino airport to Termini station late at night?"}],
    [{"role": "user", "content": "Best month for hiking Patagonia?"}],
    [{"role": "user", "content": "Do I need cash in Vienna's cafes, or do they take cards everywhere these days?"}],
]


def _same_length_questions(engine, count: int) -> list[list[dict]]:
    """`count` different questions whose prompts have the same number of tokens."""
    cities = ["Kyoto", "Porto", "Seville", "Krakow", "Bruges", "Hanoi", "Cusco", "Oaxaca", "Tbilisi", "Ghent", "Lyon", "Nara"]
    by_length: dict[int, list] = {}
    for city in cities:
        messages = [{"role": "user", "content": f"Is {city} worth a two day trip in spring?"}]
        by_length.setdefault(len(engine.build_prompt(messages)), []).append(messages)
    group = max(by_length.values(), key=len)
    assert len(group) >= count
    return group[:count]


def _ask_while_busy(engine, users):
    """Send `users` (messages, adapter) at once while the model is busy with another request, so
    that they are answered side by side with it; returns their answers and the counters before."""
    busy = engine.generate(QUESTION, "raft", temperature=0, max_new_tokens=48)
    next(busy)  # the worker is decoding now: the next requests join a running batch
    before = dataclasses.replace(engine.stats)
    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        futures = [pool.submit(engine.complete, messages, adapter, **GREEDY) for messages, adapter in users]
        list(busy)
        return [future.result() for future in futures], before


def test_concurrent_users_are_answered_side_by_side_and_each_gets_their_own_answer(engine):
    """Requests that arrive while the model is busy are answered side by side, each row with its
    own adapter, and each answer is that user's own (its solo answer up to float rounding)."""
    # Two base rows: the random test adapters answer every question alike, the base model does not.
    users = list(zip(_same_length_questions(engine, 4), ["base", "qlora", "raft", "base"]))
    solo = [engine.complete(messages, adapter, **GREEDY) for messages, adapter in users]
    assert len(set(solo)) == len(solo), "the answers must differ for a mix-up to show"
    answers, before = _ask_while_busy(engine, users)
    assert engine.stats.requests - before.requests == len(users)
    assert_answers_are_greedy_for_their_rows(engine, users, answers)
    assert_rows_are_their_own(engine, answered_rows(engine, users, solo))


def test_prompts_of_different_lengths_are_left_padded_in_a_shared_pass(engine):
    """Rows of different lengths share a pass through left padding, and each user gets the answer
    to their own question from their own adapter. Padding changes float rounding in attention,
    so a near-tie late in an answer may resolve differently than alone: the padded rows are
    checked teacher-forced (exact against the same padded batch on one adapter, within rounding
    of each row alone) and each generated answer as its own (tests/engine_checks.py)."""
    users = list(zip(QUESTIONS, ["base", "qlora", "base", "raft"]))
    assert len({len(engine.build_prompt(messages)) for messages, _ in users}) > 1
    solo = [engine.complete(messages, adapter, **GREEDY) for messages, adapter in users]
    assert len(set(solo)) == len(solo), "the answers must differ for a mix-up to show"
    answers, before = _ask_while_busy(engine, users)
    assert engine.stats.requests - before.requests == len(users)
    assert_answers_are_greedy_for_their_rows(engine, users, answers)
    assert_rows_are_their_own(engine, answered_rows(engine, users, solo))


def test_a_seeded_sample_does_not_depend_on_who_else_is_asking(engine):
    """A seed makes a sample reproducible: alone it is the same text every time; next to other
    users' sampled rows it draws from its own random stream, so it is the same sample up to the
    float rounding of another batch shape (a draw within ~1e-5 of a token boundary may fall the
    other way): it starts as the lone sample does, further than another seed's sample."""
    seeded = {"temperature": 0.9, "seed": 7, "max_new_tokens": 16}
    alone = engine.complete(QUESTION, "qlora", **seeded)
    assert engine.complete(QUESTION, "qlora", **seeded) == alone
    other_seed = engine.complete(QUESTION, "qlora", **{**seeded, "seed": 8})
    assert other_seed != alone, "another seed must give another sample for this test to mean anything"
    with ThreadPoolExecutor(max_workers=3) as pool:
        crowd = [pool.submit(engine.complete, QUESTIONS[i], "base", temperature=0.9, max_new_tokens=16) for i in range(2)]
        again = pool.submit(engine.complete, QUESTION, "qlora", **seeded).result()
        [future.result() for future in crowd]
    assert again.strip()
    assert again == alone or common_start(again, alone) > common_start(again, other_seed)


# ----------------------------------------------------------------------------- ZeroGPU
def test_on_zero_gpu_each_request_is_generated_inside_a_spaces_gpu_call(engine, settings, adapters_dir, monkeypatch, tmp_path):
    """On a ZeroGPU Space the GPU exists only inside `spaces.GPU` calls, so the engine must run
    the model there, not on its worker thread. A stand-in `spaces` module (the real one exists
    only on Spaces) records the functions it wraps and the calls that go through them."""
    import sys
    import textwrap

    from chatbot.calibration import load_serving_base

    (tmp_path / "spaces.py").write_text(
        textwrap.dedent(
            """
            import functools, threading
            wrapped, calls = [], []
            def GPU(fn=None, duration=None):
                def mark(function):
                    wrapped.append((function.__name__, duration))
                    @functools.wraps(function)
                    def on_gpu(*args, **kwargs):
                        calls.append(threading.current_thread().name)
                        yield from function(*args, **kwargs)
                    return on_gpu
                return mark(fn) if fn is not None else mark
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "spaces", raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/wayfarer")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # set by Hugging Face on ZeroGPU hardware only

    loaded = load_serving_base(settings)
    limits = engine.limits
    zero = ChatEngine(loaded, system_prompt=engine.system_prompt, sampling=engine.sampling, gpu_duration_s=90,
                      max_batch_rows=limits.max_batch_rows, max_cached_tokens=limits.max_cached_tokens,
                      max_queued_requests=limits.max_queued_requests)
    try:
        zero.load_adapter("qlora", adapters_dir / "qlora")
        import spaces

        assert zero.inline and spaces.wrapped == [("_answer_inline", 90)]
        assert zero.complete(QUESTION, "qlora", **GREEDY) == engine.complete(QUESTION, "qlora", **GREEDY)
        assert zero.complete_rows([(QUESTION, "base"), (QUESTION, "qlora")], **GREEDY) == engine.complete_rows(
            [(QUESTION, "base"), (QUESTION, "qlora")], **GREEDY
        )
        assert len(spaces.calls) == 2 and "wayfarer-generation" not in spaces.calls
        stream = zero.generate(QUESTION, "base", temperature=0, max_new_tokens=200)
        next(stream)
        stream.close()  # Stop inside a GPU call frees the model too
        assert zero.complete(QUESTION, "base", **GREEDY) == engine.complete(QUESTION, "base", **GREEDY)
    finally:
        zero.close()
        monkeypatch.delitem(sys.modules, "spaces")


THREAD_PROBE = """
import json, threading
from settings import apply_runtime, load_settings
settings = load_settings()
apply_runtime(settings)
import torch
configured = torch.get_num_threads()
from chatbot import ChatEngine
engine = ChatEngine.from_settings(settings)
question = [{"role": "user", "content": "Is Lisbon rainy in March?"}]
answer = "".join(engine.generate(question, "base", temperature=0, max_new_tokens=8))
engine.score_rows([(engine.build_prompt(question), "base")])
seen = []
later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
later.start()
later.join()
print(json.dumps({"configured": configured, "model_threads": engine.model_threads, "main": torch.get_num_threads(),
                  "worker": engine.run_on_model_thread(torch.get_num_threads), "later_thread": seen[0],
                  "worker_name": engine.run_on_model_thread(lambda: threading.current_thread().name),
                  "answer": answer}))
"""


def test_only_the_engines_worker_computes_with_several_threads(settings, tmp_path):
    """libgomp keeps a pool of OpenMP threads per thread that ran a multi-threaded op, and two pools
    on two cores sleep between ops (chatbot/model_thread.py): the worker takes the configured
    threads; the main thread, and any thread started later (Gradio's, the embedder's), keep to one.
    In a process of its own, as an app's: this test session's main thread trains and scores too."""
    import subprocess
    import sys

    from tests.conftest import MODELS_CACHE, REPO, settings_env

    env = {**os.environ, "WAYFARER_PROFILE": "local", "PYTHONPATH": str(REPO),
           **settings_env({"paths": {"home": str(tmp_path), "models": str(MODELS_CACHE)},
                           "runtime": {"torch_threads": 2}, "model": {"quantization": "none", "adapters": []}})}
    done = subprocess.run([sys.executable, "-c", THREAD_PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["answer"].strip(), "the engine must have answered"
    assert seen["configured"] == seen["model_threads"] == seen["worker"] == 2, seen
    assert seen["worker_name"] == "wayfarer-generation", seen
    assert seen["main"] == seen["later_thread"] == 1, seen


def test_work_run_on_the_model_thread_returns_its_result_or_raises_its_error_and_serving_goes_on(engine):
    assert engine.run_on_model_thread(lambda: 41 + 1) == 42
    with pytest.raises(ZeroDivisionError):
        engine.run_on_model_thread(lambda: 1 / 0)
    assert "".join(engine.generate(QUESTION, "base", **GREEDY)).strip()
