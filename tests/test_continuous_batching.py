"""Continuous batching on the real embedded model: rows join and leave the running batch, each
with its own adapter and sampling; limits refuse with a message. No timing is asserted: the
order in which pieces arrive is what shows that rows run side by side."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from chatbot import GenerationError

LONG = [{"role": "user", "content": "What should I pack for a week in Lisbon in March?"}]
SHORT = [{"role": "user", "content": "Is Kyoto worth a day trip from Osaka?"}]


def _consume(stream, tag, log, lock):
    for piece in stream:
        with lock:
            log.append((tag, piece))


def test_a_request_arriving_mid_answer_streams_before_the_running_answer_ends(engine):
    log, lock = [], threading.Lock()
    running = engine.generate(LONG, "base", temperature=0, max_new_tokens=96)
    first = next(running)  # the long answer is being decoded now
    log.append(("long", first))
    reader = threading.Thread(target=_consume, args=(running, "long", log, lock))
    reader.start()
    _consume(engine.generate(SHORT, "qlora", temperature=0, max_new_tokens=8), "short", log, lock)
    reader.join()
    tags = [tag for tag, _ in log]
    assert tags.count("long") > 10 and "short" in tags
    # The newcomer joined the running batch: its text came while the long answer was still going.
    assert tags.index("short") < len(tags) - 1 - tags[::-1].index("long")


def test_rows_with_different_sampling_share_decode_steps(engine):
    before = dataclasses.replace(engine.stats)
    greedy = engine.generate(LONG, "base", temperature=0, max_new_tokens=48)
    next(greedy)
    sampled = engine.complete(SHORT, "raft", temperature=0.9, top_k=20, top_p=0.8, seed=7, max_new_tokens=12)
    rest = "".join(greedy)
    assert sampled.strip() and rest.strip()
    assert engine.stats.mixed_sampling_steps > before.mixed_sampling_steps
    assert engine.stats.largest_pass >= 2


def test_a_battles_two_rows_start_together_in_one_prefill(engine):
    before = dataclasses.replace(engine.stats)
    answers = engine.complete_rows([(SHORT, "qlora"), (SHORT, "raft")], temperature=0, max_new_tokens=8)
    assert all(a.strip() for a in answers) and answers[0] != answers[1]
    assert engine.stats.prefills - before.prefills == 1
    assert engine.stats.rows - before.rows == 2


def test_stop_ends_one_row_only(engine):
    solo = engine.complete(SHORT, "raft", temperature=0, max_new_tokens=24)
    stopped = engine.generate(LONG, "base", temperature=0, max_new_tokens=200)
    next(stopped)
    other = engine.generate(SHORT, "raft", temperature=0, max_new_tokens=24)
    pieces = [next(other)]
    stopped.close()  # the first user presses Stop
    pieces += list(other)
    answer = "".join(pieces)
    # The other row went on to its own end (its first words are its solo answer's).
    assert answer.split()[:5] == solo.split()[:5]
    assert len(answer.split()) >= len(solo.split()) - 2
    assert engine.running_rows == 0  # the stopped row left and freed its slot


def test_batched_rows_predict_what_the_model_predicts_for_them_alone(engine):
    """Rows joining a running batch at different steps, with different adapters: every greedy
    token is the argmax of transformers' own forward over that row alone (teacher forcing),
    up to float rounding between batch shapes (>= 99% agreement)."""
    import torch

    from chatbot.decode import DecodeBatch, Row
    from modeling.adapters import BASE_ADAPTER

    class Recorder:
        def __init__(self):
            self.ids, self.ended = [], False

        def token(self, token_id):
            self.ids.append(token_id)

        def end(self):
            self.ended = True

        cancelled = False

    greedy = engine.sampling.override(temperature=0, repetition_penalty=1.0, max_ngram_repeats=0, max_new_tokens=20)
    prompts = [(engine.build_prompt(LONG), "base"), (engine.build_prompt(SHORT), "qlora"), (engine.build_prompt(SHORT), "raft")]
    rows = [Row(ids, adapter, greedy, None, Recorder()) for ids, adapter in prompts]
    with engine.model_lock, torch.inference_mode():
        batch = DecodeBatch(engine.model, set(), BASE_ADAPTER)
        batch.join(rows[:1])
        for _ in range(5):
            batch.step()
        batch.join(rows[1:])  # two newcomers, prefilled together, join a running row
        while batch.rows:
            batch.step()
            batch.leave(batch.finished())
    agree = total = 0
    for row, (ids, adapter) in zip(rows, prompts):
        assert row.sink.ended and len(row.sink.ids) == 20
        logits = engine.score_rows([(ids + row.sink.ids, adapter)])[0]
        predicted = logits[len(ids) - 1 : -1].argmax(-1).tolist()
        agree += sum(p == t for p, t in zip(predicted, row.sink.ids))
        total += len(row.sink.ids)
    assert agree / total >= 0.99
    assert rows[1].sink.ids != rows[2].sink.ids, "each row applied its own adapter"


@pytest.fixture()
def small_engine(engine, settings):
    """A second engine on the same base with tight limits: one row at a time, one waiting."""
    from chatbot.calibration import load_serving_base
    from chatbot.local_engine import ChatEngine

    tight = ChatEngine(
        load_serving_base(settings),
        system_prompt=engine.system_prompt,
        sampling=engine.sampling,
        max_batch_rows=1,
        max_queued_requests=1,
        max_cached_tokens=1024,
    )
    yield tight
    tight.close()


def test_a_long_queue_and_an_oversized_request_are_refused_with_a_message(small_engine):
    running = small_engine.generate(LONG, "base", temperature=0, max_new_tokens=64)
    next(running)  # admitted: the one row is busy
    waiting = small_engine.generate(SHORT, "base", temperature=0, max_new_tokens=4)  # queued
    with pytest.raises(GenerationError, match="server is busy"):
        small_engine.generate(SHORT, "base", temperature=0, max_new_tokens=4)
    with pytest.raises(GenerationError, match="more than this server runs together"):
        small_engine.generate_rows([(SHORT, "base"), (SHORT, "base")], temperature=0)
    running.close()
    assert "".join(waiting).strip()  # the queued one is answered once the row is free
    with pytest.raises(GenerationError, match="tokens of cache"):
        small_engine.generate(SHORT, "base", max_new_tokens=2000)
    assert small_engine.stats.refused == 3
    assert small_engine.complete(SHORT, "base", temperature=0, max_new_tokens=4).strip()


def test_the_local_engine_is_an_engine_and_the_factory_builds_it(engine, settings):
    from chatbot.engine import Engine, engine_from_settings
    from chatbot.remote import RemoteEngine

    assert isinstance(engine, Engine)
    assert all(hasattr(RemoteEngine, name) for name in ("generate", "generate_rows", "complete", "complete_rows", "close", "adapters"))
    with pytest.raises(Exception, match="inference.backend must be one of"):
        engine_from_settings(settings.with_overrides({"inference": {"backend": "tgi"}}))


def test_the_decode_loops_fused_norm_and_rotary_give_the_models_own_logits(engine):
    """chatbot/decode.py replaces Llama's RMSNorm (about eight operations) by one `rms_norm` and
    the rotary embedding of q and k by one pass, each only where a probe shows it is exact: on
    the embedded model both are used, and a prompt's logits and the next step's are bit for bit
    those of the model's own modules."""
    import torch
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from chatbot.decode import ModelRunner

    ids = engine.build_prompt(SHORT)
    with engine.model_lock, torch.inference_mode():
        runner = ModelRunner(engine.model)
        assert runner.rotary is not apply_rotary_pos_emb, "the one-pass rotary was not exact on the probe"
        assert runner.rms_norm.__name__ == "fused", "the fused rms_norm was not exact on the probe"
        logits = {}
        for name, rms_norm, rotary in [("fused", runner.rms_norm, runner.rotary),
                                       ("modules", lambda module, x: module(x), apply_rotary_pos_emb)]:
            runner.rms_norm, runner.rotary = rms_norm, rotary
            cache = runner.new_cache()
            cache.fit(0, 1, len(ids) + 8)
            cache.clear_slots(0, 1)
            first = runner.prefill(cache, 0, [ids], None)
            step = runner.decode(cache, first.argmax(-1), torch.tensor([len(ids)]), None)
            logits[name] = (first, step)
    assert all(torch.equal(a, b) for a, b in zip(logits["fused"], logits["modules"]))


def test_fused_projections_share_the_layers_weights_and_compute_what_each_layer_computes(engine):
    """chatbot/decode.py runs Q, K and V (and gate and up) as one fused layer (modeling/fused.py)
    and their adapters as one packed group (modeling/multi_lora.py). On the embedded model every
    decoder layer is fused, the layers' own weights are views of the fused ones (no memory
    added), and a batch mixing two adapters and the bare base gives, prefill and decode step, the
    logits of the same batch run layer by layer through peft, up to float rounding."""
    import torch

    from chatbot.decode import ModelRunner
    from modeling.adapters import PEFT_BASE_NAME
    from tests.engine_checks import LOGIT_TOLERANCE

    ids = engine.build_prompt(SHORT)
    adapters = ["qlora", PEFT_BASE_NAME, "raft"]

    def logits(runner):
        cache = runner.new_cache()
        cache.fit(0, 3, len(ids) + 8)
        cache.clear_slots(0, 3)
        first = runner.prefill(cache, 0, [ids] * 3, adapters)
        step = runner.decode(cache, first.argmax(-1), torch.tensor([len(ids)] * 3), adapters)
        return first, step

    with engine.model_lock, torch.inference_mode():
        fused = ModelRunner(engine.model)
        groups = [group for layer in fused.projections for group in layer]
        assert all(g.fused is not None for g in groups), "a layer ran unfused"
        # The test adapters put LoRA on q_proj and v_proj: Q, K and V are one group, k without LoRA.
        assert all(layer[0].lora is not None for layer in fused.projections), "a layer's adapters ran unpacked"
        for group in groups:
            storage = group.fused.weight.untyped_storage().data_ptr()
            bases = [getattr(m, "base_layer", m) for m in group.modules]
            assert all(b.weight.untyped_storage().data_ptr() == storage for b in bases)
            if group.lora is not None:
                a = group.lora.a.untyped_storage().data_ptr()
                assert all(m.lora_A[n].weight.untyped_storage().data_ptr() == a
                           for m in group.modules if hasattr(m, "lora_A") for n in ("qlora", "raft"))
        batched = logits(fused)
        one_by_one = ModelRunner(engine.model)
        for group in (g for layer in one_by_one.projections for g in layer):
            group.fused = None  # each layer on its own, through peft's forward
        reference = logits(one_by_one)
    assert not torch.allclose(reference[0][0], reference[0][2]), "the adapters must change the logits for this to mean anything"
    for mine, theirs in zip(batched, reference):
        largest = (mine - theirs).abs().max().item()
        assert largest < LOGIT_TOLERANCE, f"fused logits differ from the layers' own by up to {largest:.3g}"
        assert torch.equal(mine.argmax(-1), theirs.argmax(-1))
