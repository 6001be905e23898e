"""Training the adapters on the real 4-bit embedded model with tiny step counts.

The demo corpus goes through the real pipeline (ingest -> build); each trainer runs a few steps
on a handful of rows and writes an adapter folder that the real chat engine then serves.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from settings import apply_runtime, load_settings
from tests.conftest import MODELS_CACHE

GREEDY = {"temperature": 0, "max_new_tokens": 12}
QUESTION = [{"role": "user", "content": "What is the cheapest way from Narita airport to Shinjuku?"}]

TINY_RUN = dict(grad_accumulation=1, logging_steps=1, warmup_ratio=0.0, lr_scheduler="constant")
TRAINING = {
    "seed": 7,
    "compute_dtype": "float32",
    # LoRA on the top 20 of SmolLM2's 30 layers (the local profile puts it on all 30): every adapter
    # below (qlora, raft, reward, dpo) is trained, then served, without LoRA on layers 0-9.
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear", "top_layers": 20},
    "qlora": {**TINY_RUN, "learning_rate": 3e-3, "max_steps": 3, "eval_steps": 3, "batch_size": 1,
              "max_length": 192, "max_train_rows": 6, "max_eval_rows": 2},
    "raft": {**TINY_RUN, "learning_rate": 3e-3, "max_steps": 2, "eval_steps": 2, "batch_size": 1,
             "max_length": 480, "max_train_rows": 3, "max_eval_rows": 1},
    "reward": {**TINY_RUN, "learning_rate": 3e-3, "max_steps": 8, "eval_steps": 8, "batch_size": 2,
               "max_length": 512, "max_eval_rows": 4},
    "dpo": {**TINY_RUN, "learning_rate": 1e-3, "max_steps": 2, "eval_steps": 2, "batch_size": 1,
            "max_length": 512, "max_train_rows": 4, "max_eval_rows": 2, "beta": 0.1},
    "online": {**TINY_RUN, "learning_rate": 1e-4, "max_steps": 1, "eval_steps": 1, "batch_size": 2,
               "max_length": 256, "max_train_rows": 2, "num_generations": 2, "max_completion_length": 8},
}


def make_settings(home: Path, **extra):
    loaded = load_settings(profile="local", overrides=training_overrides(home, **extra))
    apply_runtime(loaded)
    return loaded


def training_overrides(home: Path, **extra) -> dict:
    """The tiny training budget over the local profile, with `extra` sections merged in (one
    level deep); also handed to app processes as WAYFARER__<SECTION> variables."""
    overrides = {
        "paths": {"home": str(home), "models": str(MODELS_CACHE)},
        "runtime": {"torch_threads": 2},
        "generation": {"max_new_tokens": 12},
        "model": {"adapters": ["qlora", "raft", "rlhf"]},
        # Short chunks and one distractor keep RAFT prompts within a tiny max_length.
        "retrieval": {"chunk_tokens": 48, "chunk_overlap_tokens": 8},
        # Preference prompts carry their retrieved documents (as RLHF is served): short questions
        # and replies keep them within the tiny reward/DPO max_length.
        "data": {"datasets": {"raft_distractors": 1, "raft_hard_negatives": False,
                              "question_max_chars": 300, "preference_answer_max_chars": 200}},
        "training": TRAINING,
    }
    for key, value in extra.items():
        overrides.setdefault(key, {}).update(value)
    return overrides


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Settings with the demo corpus ingested and built by the pipeline itself."""
    from training.pipeline import run_pipeline

    settings = make_settings(tmp_path_factory.mktemp("training-home"))
    outcome = run_pipeline(settings, until="build", skip={"index"})  # tests/test_datasets.py covers the index
    assert [name for name, _ in outcome.ran] == ["ingest", "build"]
    return settings


@pytest.fixture(scope="module")
def qlora(demo):
    """The qlora trainer before training (to inspect its labels), then the trained result."""
    from training.sft import prepare_sft

    run = prepare_sft(demo, "qlora")
    rows = [run.trainer.train_dataset[i] for i in range(len(run.trainer.train_dataset))]
    return rows, run.trainer.processing_class, run.train()


@pytest.fixture(scope="module")
def raft_adapter(demo):
    from training.sft import train_sft

    return train_sft(demo, "raft")


@pytest.fixture(scope="module")
def dpo(demo, raft_adapter):
    """DPO prepared from the RAFT adapter: step-0 facts measured, then trained."""
    import torch
    from safetensors.torch import load_file

    from training.rlhf import prepare_dpo

    run = prepare_dpo(demo)
    model = run.trainer.model
    ids = run.trainer.processing_class.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    model.eval()
    with torch.no_grad():
        model.set_adapter("default")
        policy = model(input_ids=ids).logits
        with model.disable_adapter():
            bare = model(input_ids=ids).logits
    raft_weights = load_file(str(raft_adapter.path / "adapter_model.safetensors"))

    def adapter_weights(name):
        return {n: p.detach().clone().float() for n, p in model.named_parameters() if f".{name}." in n}

    facts = {
        "policy_vs_bare_base": (policy - bare).abs().max().item(),
        # The policy's adapter may be cast for training (bf16 in QLoRA) while the reference stays
        # fp32, so their logits differ by that rounding, which depends on the CPU's bf16 units
        # (measured: 1.02 on a Xeon with AMX). The weights say exactly what each adapter starts as.
        "default_dtypes": {n: p.dtype for n, p in model.named_parameters() if ".default." in n},
        "ref_trainable": [n for n, p in model.named_parameters() if ".ref." in n and p.requires_grad],
        "default_trainable": any(p.requires_grad for n, p in model.named_parameters() if ".default." in n),
        "ref_before": adapter_weights("ref"),
        "default_before": adapter_weights("default"),
        "raft_weights": raft_weights,
    }
    # The fused-head call trl's DPO loss makes, next to the model's plain logits (no autocast: fp32).
    batch = next(iter(run.trainer.get_train_dataloader()))
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        fused = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                      fused_lm_head=True)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    facts["fused_head"] = fused, logits, labels
    facts["eval_at_start"] = run.trainer.evaluate()  # what trl measures at step 0 (the run records it unmeasured)
    result = run.train()
    facts["ref_after"] = adapter_weights("ref")
    facts["default_after"] = adapter_weights("default")
    return facts, result


def _saved_key(param_name: str, adapter: str) -> str:
    """peft parameter name -> key in the saved adapter file."""
    return param_name.replace(f".{adapter}.", ".")


# ------------------------------------------------------------------------------------ SFT
def test_sft_loss_is_on_the_assistant_turn_only_with_the_served_system_prompt(qlora, demo):
    rows, tokenizer, _ = qlora
    system_prompt = demo.get("model.system_prompt")
    assert rows
    for row in rows:
        ids, labels = row["input_ids"], row["labels"]
        masked = [i for i, label in enumerate(labels) if label == -100]
        trained = [i for i, label in enumerate(labels) if label != -100]
        assert masked and trained
        # The prompt is one block at the start; everything after it is trained.
        assert masked == list(range(len(masked))) and trained[0] == len(masked)
        prompt_text = tokenizer.decode(ids[: len(masked)])
        answer_text = tokenizer.decode([ids[i] for i in trained])
        assert prompt_text.startswith("<|im_start|>system\n" + system_prompt)
        assert prompt_text.rstrip().endswith("<|im_start|>assistant")
        assert "<|im_start|>user" in prompt_text and "<|im_start|>" not in answer_text
        assert [labels[i] for i in trained] == [ids[i] for i in trained]


def test_the_cpu_sft_loss_is_trls_loss_with_the_head_on_the_answer_tokens_only(demo):
    """On a CPU the SFT trainers score only the answer tokens with the output head
    (training/completion_loss.py); the loss must be trl's own and the model's own, to rounding."""
    import torch
    from trl import SFTTrainer

    from training.sft import prepare_sft

    run = prepare_sft(demo, "qlora", max_steps=1)
    trainer, model = run.trainer, run.trainer.model
    assert type(trainer).__name__ == "CompletionLossSFTTrainer"
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()
    model.eval()
    with torch.no_grad():
        ours = float(trainer.compute_loss(model, dict(batch)))
        trls = float(SFTTrainer.compute_loss(trainer, model, dict(batch)))  # its fused head, every position
        models = float(model(**batch).loss)  # transformers' shifted cross-entropy over the labels
    run.scratch.cleanup()
    assert ours == pytest.approx(trls, rel=1e-4) and ours == pytest.approx(models, rel=1e-4)


def test_qlora_writes_a_complete_adapter_with_its_metadata(qlora, demo):
    from modeling.adapters import ADAPTER_METADATA_FILE
    from training.examples import dataset_fingerprint

    result = qlora[2]
    folder = demo.path("adapters") / "qlora"
    assert result.path == folder
    for name in ("adapter_model.safetensors", "adapter_config.json", "training_config.yaml", "loss_curve.png"):
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metadata = json.loads((folder / ADAPTER_METADATA_FILE).read_text())
    assert metadata["base_model"] == demo.get("model.base")
    assert metadata["method"] == "qlora"
    assert metadata["datasets"]["sft"]["fingerprint"] == dataset_fingerprint(demo.path("datasets") / "sft")
    assert metadata["training_config"]["qlora"]["max_steps"] == 3
    assert metadata["training_config"]["lora"]["target_modules"] == "all-linear"
    assert set(metadata["versions"]) >= {"trl", "peft"}
    assert metadata["metrics"]["steps"] == 3
    assert metadata["metrics"]["eval_loss_before"] > 0 and metadata["metrics"]["eval_loss_after"] > 0
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    # all-linear: every projection of the attention and the MLP blocks is adapted.
    assert set(adapter_config["target_modules"]) >= {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                      "up_proj", "down_proj"}
    assert metadata["training_config"]["lora"]["top_layers"] == 20
    from safetensors import safe_open

    with safe_open(folder / "adapter_model.safetensors", "pt") as weights:
        layers = {int(key.split(".layers.")[1].split(".")[0]) for key in weights.keys()}
    assert layers == set(range(10, 30)), "LoRA must sit on the top 20 layers only"
    assert not list(folder.parent.glob(".qlora-*")), "scratch folders were left behind"


def test_lora_on_more_layers_than_the_model_has_is_a_clear_error():
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.config import LoraSettings
    from training.errors import TrainingError
    from training.model import lora_config

    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                         num_attention_heads=2, num_key_value_heads=2, vocab_size=64))
    lora = LoraSettings(r=8, alpha=16, dropout=0.0, target_modules="all-linear", top_layers=4)
    with pytest.raises(TrainingError, match="top_layers is 4; this model has 3 decoder layers"):
        lora_config(lora, model)
    assert lora_config(dataclasses.replace(lora, top_layers=None), model).layers_to_transform is None


def test_raft_trains_on_documents_with_the_documents_system_prompt(raft_adapter, demo):
    from raft import system_prompt_with_documents

    metadata = raft_adapter.metadata
    assert metadata["method"] == "raft" and metadata["metrics"]["steps"] == 2
    assert metadata["datasets"]["raft"]["rows"]["train"] == 3
    assert metadata["system_prompt"] == demo.get("model.system_prompt")
    assert system_prompt_with_documents(metadata["system_prompt"]) != metadata["system_prompt"]


# ------------------------------------------------------------------------------------ DPO
def test_dpo_starts_from_the_raft_adapter_which_stays_its_frozen_reference(dpo, raft_adapter):
    import torch

    facts, result = dpo
    assert facts["policy_vs_bare_base"] > 0.5, "RAFT must differ from the bare base for this test to mean anything"
    assert facts["ref_trainable"] == [] and facts["default_trainable"]
    raft = facts["raft_weights"]
    # At step 0 the policy is the RAFT adapter: every weight is RAFT's, in the dtype it trains in.
    assert facts["default_before"] and len(facts["default_before"]) == len(raft)
    for name, value in facts["default_before"].items():
        expected = raft[_saved_key(name, "default")].to(facts["default_dtypes"][name]).float()
        assert torch.equal(value, expected), f"the policy does not start as RAFT: {name}"
    assert len(facts["ref_before"]) == len(raft)
    for name, value in facts["ref_before"].items():
        assert torch.equal(value, raft[_saved_key(name, "ref")].float()), name
    for name, value in facts["ref_after"].items():
        assert torch.equal(value, facts["ref_before"][name]), f"reference moved: {name}"
    moved = [n for n, v in facts["default_after"].items() if not torch.equal(v, facts["default_before"][n])]
    assert moved, "DPO did not update the policy"
    assert result.metadata["method"] == "dpo"
    assert result.metadata["start_adapter"]["inputs_fingerprint"] == raft_adapter.metadata["inputs_fingerprint"]
    assert not (result.path / "ref").exists(), "only the policy adapter is saved"


def test_dpos_step_0_evaluation_is_recorded_as_trl_measures_it_without_running_it(dpo):
    import json

    from training.rlhf.dpo import DPO_EVAL_AT_START

    facts, result = dpo
    measured = facts["eval_at_start"]
    assert measured["eval_loss"] == pytest.approx(DPO_EVAL_AT_START["eval_loss"], abs=1e-4)
    assert measured["eval_rewards/accuracies"] == 0.0 and abs(measured["eval_rewards/margins"]) < 1e-4
    history = json.loads((result.path / "log_history.json").read_text())
    assert history[0] == DPO_EVAL_AT_START  # the loss curve's "before" point
    assert [e["step"] for e in history if "eval_loss" in e][:2] != [0, 0], "step 0 was evaluated as well"
    metrics = result.metadata["metrics"]
    assert metrics["eval_loss_before"] == DPO_EVAL_AT_START["eval_loss"] and metrics["preference_accuracy_before"] == 0.0
    assert metrics["eval_before"].startswith("by construction")


def test_the_cpu_dpo_scores_the_answer_positions_only_with_the_models_own_log_probs(dpo):
    """On a CPU the DPO loss's fused-head call scores only the labelled (answer) positions
    (training/completion_loss.py): the same log-probabilities, entropy and top-1 as the model's
    own logits there, and zero at every other position, as trl's kernel returns them."""
    import torch

    fused, logits, labels = dpo[0]["fused_head"]
    targets = labels[:, 1:]
    mask = targets != -100
    assert mask.any() and (~mask).any()
    log_probs = logits[:, :-1].log_softmax(-1)
    expected = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert fused.log_probs.shape == targets.shape
    assert torch.allclose(fused.log_probs[mask], expected[mask], rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(fused.log_probs[~mask]) == 0
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    assert torch.allclose(fused.entropy[mask], entropy[mask], rtol=1e-4, atol=1e-4)
    assert torch.equal(fused.is_top1[mask].bool(), logits[:, :-1].argmax(-1)[mask] == targets[mask])
    # The per-sequence sums DPO compares: chosen and rejected rows alike.
    assert torch.allclose(fused.log_probs.sum(1), (expected * mask).sum(1), rtol=1e-4, atol=1e-3)


def test_rlhf_refuses_without_the_raft_adapter(tmp_path):
    from training.errors import TrainingError
    from training.rlhf import run_rlhf

    settings = make_settings(tmp_path)
    with pytest.raises(TrainingError, match="python -m training raft"):
        run_rlhf(settings)


# ------------------------------------------------------------------------------------ serving
def test_the_engine_serves_all_three_adapters_and_each_answers_differently_from_base(demo, qlora, raft_adapter, dpo):
    from chatbot import ChatEngine

    engine = ChatEngine.from_settings(demo)
    try:
        assert engine.adapters == ["base", "qlora", "raft", "rlhf"], engine.adapter_errors
        # A few training steps may leave the first greedy words alone, so compare what each
        # served adapter predicts over the whole prompt, in one batched pass as the engine serves.
        ids = engine.build_prompt(QUESTION)
        logits = engine.score_rows([(ids, name) for name in ("base", "qlora", "raft", "rlhf")])
        for row, name in enumerate(("qlora", "raft", "rlhf"), start=1):
            assert (logits[row] - logits[0]).abs().max() > 0.1, f"{name} does not change the model"
        assert engine.complete(QUESTION, "rlhf", **GREEDY).strip()
    finally:
        engine.close()


def test_an_adapter_recorded_for_another_base_model_is_refused(demo, qlora, tmp_path):
    from modeling.adapters import ADAPTER_METADATA_FILE, AdapterLoadError, check_adapter_dir

    other = tmp_path / "qlora"
    shutil.copytree(demo.path("adapters") / "qlora", other)
    metadata = json.loads((other / ADAPTER_METADATA_FILE).read_text())
    metadata["base_model"] = "mistralai/Mistral-7B-Instruct-v0.3"
    (other / ADAPTER_METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(AdapterLoadError, match="trained on base model 'mistralai/Mistral-7B-Instruct-v0.3'"):
        check_adapter_dir("qlora", other, base_model=None, base_model_id=demo.get("model.base"))


# ------------------------------------------------------------------------------------ data
def test_the_golden_split_is_in_no_training_set(demo):
    from datasets import load_from_disk

    from training.errors import TrainingError
    from training.examples import check_no_golden
    from corpus import load_golden_thread_ids

    datasets_dir = demo.path("datasets")
    golden = load_golden_thread_ids(datasets_dir)
    assert golden
    for name in ("sft", "raft", "preference"):
        for split, rows in load_from_disk(str(datasets_dir / name)).items():
            assert not golden & set(rows["thread_id"]), f"{name}/{split} holds golden threads"
    leaked = load_from_disk(str(datasets_dir / "sft"))["train"].select(range(2))
    leaked = leaked.map(lambda row: {"thread_id": sorted(golden)[0]})
    with pytest.raises(TrainingError, match="golden"):
        check_no_golden(datasets_dir, leaked)


def test_the_pipeline_skips_every_step_whose_outputs_are_current(demo, qlora, raft_adapter, dpo):
    from training.pipeline import run_pipeline

    outcome = run_pipeline(demo, skip={"index", "evaluate"})  # tests/test_evaluation_tab.py runs evaluate
    assert outcome.ran == []
    assert [name for name, _ in outcome.skipped] == ["ingest", "index", "build", "qlora", "raft", "rlhf", "evaluate"]

    # A changed dataset setting reruns build, and nothing upstream of it.
    changed = demo.with_overrides({"data": {"datasets": {"validation_fraction": 0.2}}})
    outcome = run_pipeline(changed, until="build", skip={"index"})
    assert [name for name, _ in outcome.ran] == ["build"]


# ------------------------------------------------------------------------------------ reward model
HELPFUL = [
    "Take the Narita Express to Shinjuku: about 90 minutes and 3,250 yen, or the Keisei bus for 1,300 yen.",
    "In Lisbon cards work almost everywhere, but carry 20 euros in cash for small cafes and the trams.",
    "Two weeks is enough for Hanoi to Ho Chi Minh City if you fly the long legs and take the train to Hue.",
    "Tipping is not expected in Japan; staff may even return the money. Good service is included.",
    "Buy the Seoul T-money card at any convenience store and top it up with cash for buses and subways.",
    "Book the Alhambra in Granada at least a month ahead; the Nasrid Palaces sell out first.",
    "From Rome Fiumicino the Leonardo Express reaches Termini in 32 minutes for 14 euros.",
    "In Iceland fill up the rental car whenever you can on the east coast: stations are far apart.",
]
LOW_EFFORT = ["lol idk", "no idea tbh", "who cares", "lol", "idk google it", "meh", "dunno lol", "k"]
QUESTIONS = [
    "How do I get from Narita to Shinjuku?", "Do I need cash in Lisbon?", "Is two weeks enough for Vietnam?",
    "Should I tip in Japan?", "How do I pay for transport in Seoul?", "When should I book the Alhambra?",
    "How do I get from Fiumicino to the city?", "Any driving tips for Iceland?",
]


def _pairs(indices):
    return [{"prompt": [{"role": "user", "content": QUESTIONS[i]}],
             "chosen": [{"role": "assistant", "content": HELPFUL[i]}],
             "rejected": [{"role": "assistant", "content": LOW_EFFORT[i]}],
             "thread_id": f"t{i}"} for i in indices]


@pytest.fixture(scope="module")
def clear_pairs(tmp_path_factory):
    """Settings whose datasets are clear preference pairs plus one exported arena vote."""
    from datasets import Dataset, DatasetDict

    settings = make_settings(tmp_path_factory.mktemp("reward-home"))
    datasets_dir = settings.path("datasets")
    DatasetDict({"train": Dataset.from_list(_pairs(range(6)) * 2),
                 "validation": Dataset.from_list(_pairs([6, 7]))}).save_to_disk(str(datasets_dir / "preference"))
    DatasetDict({"train": Dataset.from_list(_pairs([0])), "validation": Dataset.from_list(_pairs([1]))}).save_to_disk(
        str(datasets_dir / "arena_preference"))
    (datasets_dir / "golden_thread_ids.json").write_text("[]")
    return settings


def test_the_reward_model_ranks_a_clear_chosen_above_a_clear_rejected(clear_pairs):
    from training.rlhf import RewardScorer, train_reward

    result = train_reward(clear_pairs)
    metadata = result.metadata
    assert metadata["datasets"]["arena_preference"]["rows"] == {"train": 1, "validation": 1}
    assert metadata["metrics"]["train_pairs"] == 13  # 12 Reddit-style pairs + 1 arena vote
    assert metadata["metrics"]["pairwise_accuracy"] == 1.0
    assert (result.path / "adapter_model.safetensors").exists()

    scorer = RewardScorer.load(clear_pairs)
    prompt = [{"role": "system", "content": clear_pairs.get("model.system_prompt")},
              {"role": "user", "content": "What is the best way to get around Kyoto?"}]
    good = [{"role": "assistant", "content": "Buy a bus day pass for 700 yen and use the subway for longer hops; "
                                             "rent a bicycle to reach the temples in the east."}]
    bad = [{"role": "assistant", "content": "lol idk"}]
    assert scorer.score(prompt, good) > scorer.score(prompt, bad)


def test_online_rl_runs_grpo_from_the_raft_adapter_scored_by_the_reward_model(clear_pairs, raft_adapter, tmp_path):
    from training.rlhf import train_online

    # The reward model of the test above, and the RAFT adapter trained on the demo data.
    assert (clear_pairs.path("adapters") / "reward" / "adapter_config.json").exists()
    shutil.copytree(raft_adapter.path, clear_pairs.path("adapters") / "raft", dirs_exist_ok=True)
    result = train_online(clear_pairs, output=tmp_path / "rlhf")
    metadata = result.metadata
    assert metadata["method"] == "grpo" and metadata["metrics"]["steps"] == 1
    assert metadata["start_adapter"]["name"] == "raft"
    assert metadata["metrics"]["reward_first"] is not None
    assert (tmp_path / "rlhf" / "adapter_model.safetensors").exists()


# ------------------------------------------------------------------------------------ issue 14
def test_adapters_record_their_precision_drops_and_samples(qlora, raft_adapter, dpo):
    """What a run did is in the adapter: the precision chosen at run time, the rows dropped
    because their prompt does not fit (0 is recorded too), the seeded preference sample."""
    for metadata in (qlora[2].metadata, raft_adapter.metadata):
        precision = metadata["precision"]
        assert precision["compute_dtype"] == "float32" and precision["autocast"] is False  # TRAINING: float32
        assert precision["quantization"] == "none" and "not QLoRA" in precision["recipe"]
        record = next(iter(metadata["datasets"].values()))
        assert set(record["dropped_too_long"]) == {"train", "validation"}
    sampled = dpo[1].metadata["datasets"]["sampled"]
    assert sampled["used"]["train"] == TRAINING["dpo"]["max_train_rows"] and sampled["seed"] == TRAINING["seed"]
    assert sampled["available"]["train"] >= sampled["used"]["train"]


def test_auto_precision_is_bf16_exactly_when_the_cpu_has_bf16_units(tmp_path):
    from training.precision import cpu_has_bf16_units, training_precision
    from training.config import TrainingConfig

    settings = make_settings(tmp_path).with_overrides({"training": {"compute_dtype": "auto"}})
    config = TrainingConfig.from_settings(settings)
    precision = training_precision(settings, config, config.raft)
    expected = "bfloat16" if cpu_has_bf16_units() else "float32"
    assert precision.compute_dtype == expected and precision.autocast == (expected == "bfloat16")
    assert precision.reason.startswith("auto")


def test_progress_lines_say_step_total_elapsed_and_eta():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from training.runs import progress_callback

    lines = []
    callback = progress_callback("raft", log=lines.append)
    state, control = TrainerState(max_steps=10), TrainerControl()
    args = TrainingArguments(output_dir="/tmp/unused-wayfarer-progress", report_to="none")
    callback.on_train_begin(args, state, control)
    state.global_step = 4
    callback.on_log(args, state, control, logs={"loss": 1.25})
    assert lines[0] == "raft: training 10 optimizer steps"
    assert lines[1].startswith("raft: step 4/10, ") and "elapsed, ETA " in lines[1] and "loss 1.250" in lines[1]
