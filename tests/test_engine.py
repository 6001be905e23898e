"""The chat engine on the real embedded model: 4-bit base, chat template, streaming, adapters."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from chatbot import AdapterLoadError, ChatEngine, GenerationError, InputTooLongError

from tests.conftest import make_lora_adapter

QUESTION = [{"role": "user", "content": "What should I pack for a week in Lisbon in March?"}]
GREEDY = {"temperature": 0, "max_new_tokens": 16}


def test_base_loads_in_4bit_nf4_with_double_quant_and_is_smaller_than_bf16(engine, settings):
    import bitsandbytes as bnb

    from chatbot.base_model import ModelConfig, load_base

    quantized = [m for m in engine._model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert engine.quantized and quantized
    state = quantized[0].weight.quant_state
    assert state.quant_type == "nf4"
    assert state.nested, "double quantization (nested quant state) is off"

    config = ModelConfig.from_settings(settings.with_overrides({"model": {"compute_dtype": "bfloat16"}}))
    bf16 = load_base(config, settings.path("models"), load_in_4bit=False)
    try:
        base_model = engine._model.get_base_model() if hasattr(engine._model, "get_base_model") else engine._model
        # Compare the base weights only: the served model also carries the test adapters.
        adapter_bytes = sum(p.numel() * p.element_size() for n, p in engine._model.named_parameters() if "lora_" in n)
        four_bit = base_model.get_memory_footprint() - adapter_bytes
        assert four_bit < 0.8 * bf16.model.get_memory_footprint()
    finally:
        del bf16


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
    names = ["base", "qlora", "raft"]
    solo = {name: engine.complete(QUESTION, name, **GREEDY) for name in names}
    assert len(set(solo.values())) == 3, "the three models must answer differently for this test to mean anything"
    start = threading.Barrier(6)

    def ask(name):
        start.wait()
        return name, engine.complete(QUESTION, name, **GREEDY)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(ask, names * 2))
    for name, answer in results:
        assert answer == solo[name], f"{name} answered with another model's output"


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
    names = ["qlora", "base", "raft"]
    solo = [engine.complete(QUESTION, name, **GREEDY) for name in names]
    batched = engine.complete_rows([(QUESTION, name) for name in names], **GREEDY)
    assert batched == solo

    pieces = list(engine.generate_rows([(QUESTION, "qlora"), (QUESTION, "raft")], **GREEDY))
    rows = {row for row, _ in pieces}
    assert rows == {0, 1}
    # Both rows advance together in one pass: row 1 has text before row 0 is complete.
    first_of_row1 = next(i for i, (row, _) in enumerate(pieces) if row == 1)
    last_of_row0 = max(i for i, (row, _) in enumerate(pieces) if row == 0)
    assert first_of_row1 < last_of_row0
