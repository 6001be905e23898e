"""The study's first-run figures (issue 14): time per pipeline stage, what each adapter learned,
and how every served model answers the golden questions with retrieval, greedily.

    python bench/study_bench.py [--max-questions N] [--models base qlora raft rlhf]

Reads paths.home as configured (WAYFARER__PATHS__HOME=... to point at another run). Answers are
generated the way the app serves them: the chat engine + chatbot.rag.RagChat (retrieval, the
RAFT prompt, quote verification in postprocess), greedy, with the configured
generation.repetition_penalty and max_new_tokens. Figures, one per line:

* stage seconds            from paths.home/pipeline_state.json (written by `python -m training pipeline`)
* eval loss drop           qlora/raft adapter metadata: (before - after) / before
* DPO preference accuracy  rlhf adapter metadata (held-out preference pairs)
* quotes verified          share of answers with at least one quote, every quote found in the
                           retrieved documents (RagAnswer.quotes_verified)
* looping                  share of answers that loop (evaluation.behaviour.loops: one 4-gram of
                           words and punctuation 4 or more times), the report's definition
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatbot.calibration import cpu_model  # noqa: E402
from evaluation.behaviour import loops  # noqa: E402
from modeling.adapters import current_adapter_dir  # noqa: E402
from settings import apply_runtime, load_settings  # noqa: E402

TARGETS = {"raft_quotes": 0.70, "rlhf_quotes": 0.60, "loop_max": 0.10, "loss_drop": 0.15, "dpo_accuracy": 0.6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-questions", type=int, default=None, help="first N golden questions (default: all)")
    parser.add_argument("--models", nargs="+", default=None, help="default: every model the engine serves")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures and answers here")
    args = parser.parse_args(argv)

    from datasets import load_from_disk

    from chatbot import ChatEngine
    from chatbot.rag import RagChat
    from training.adapter_output import read_metadata
    from training.precision import cpu_has_bf16_units

    settings = load_settings()
    apply_runtime(settings)
    home = settings.path("home")
    print(f"home {home}; CPU {cpu_model()} (bf16 units: {cpu_has_bf16_units()})")
    figures: dict = {"home": str(home), "cpu": cpu_model()}

    state_path = home / "pipeline_state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    stages = {step: entry["seconds"] for step, entry in state.items() if isinstance(entry, dict) and "seconds" in entry}
    # Steps that ran side by side (training.side_by_side_sft) overlap: the wall time counts the longest.
    groups: dict[frozenset, float] = {}
    for step, seconds in stages.items():
        together = state[step].get("side_by_side_with") or []
        print(f"stage {step:<10} {seconds:8.1f} s" + (f" (side by side with {', '.join(together)})" if together else ""))
        group = frozenset([step, *together])
        groups[group] = max(groups.get(group, 0.0), seconds)
    print(f"stages wall time {sum(groups.values()):8.1f} s")
    figures["stage_seconds"] = stages

    adapters = settings.path("adapters")
    checks = []
    for name in ("qlora", "raft"):
        metrics = (read_metadata(adapters / name) or {}).get("metrics", {})
        before, after = metrics.get("eval_loss_before"), metrics.get("eval_loss_after")
        if before and after is not None:
            drop = (before - after) / before
            print(f"{name} eval loss {before:.3f} -> {after:.3f} (drop {drop:.1%}, {metrics.get('steps')} steps, "
                  f"{metrics.get('train_rows')} rows, {metrics.get('train_seconds')} s)")
            figures[f"{name}_loss_drop"] = drop
            checks.append((f"{name} eval loss falls >= {TARGETS['loss_drop']:.0%}", drop >= TARGETS["loss_drop"]))
    rlhf = (read_metadata(current_adapter_dir(adapters / "rlhf")) or {}).get("metrics", {})
    reward = (read_metadata(adapters / "reward") or {}).get("metrics", {})
    if reward:
        print(f"reward pairwise accuracy {reward.get('pairwise_accuracy_before')} -> {reward.get('pairwise_accuracy')} "
              f"({reward.get('train_pairs')} pairs, {reward.get('train_seconds')} s)")
    if rlhf:
        accuracy = rlhf.get("preference_accuracy")
        print(f"dpo validation reward accuracy {rlhf.get('preference_accuracy_before')} -> {accuracy} "
              f"({rlhf.get('train_pairs')} pairs, {rlhf.get('train_seconds')} s)")
        figures["dpo_accuracy"] = accuracy
        checks.append((f"dpo validation reward accuracy > {TARGETS['dpo_accuracy']}",
                       accuracy is not None and accuracy > TARGETS["dpo_accuracy"]))

    golden = load_from_disk(str(settings.path("datasets") / "golden"))
    questions = sorted(golden, key=lambda row: row["thread_id"])[: args.max_questions]
    engine = ChatEngine.from_settings(settings)
    rag = RagChat.from_settings(engine, settings)
    models = args.models or list(engine.adapters)
    generation = settings.config.generation
    sampling = {"temperature": 0, "max_new_tokens": generation.max_new_tokens, "repetition_penalty": generation.repetition_penalty}
    print(f"{len(questions)} golden questions x {models}, greedy, with retrieval, {sampling}")
    turns = [rag.prepare([{"role": "user", "content": row["question"]}], use_retrieval=True) for row in questions]
    without_documents = sum(1 for turn in turns if not turn.documents)
    requests = [(turn, model) for turn in turns for model in models]
    batch = max(1, settings.config.runtime.max_batch_rows)
    started = time.monotonic()
    texts = []
    try:
        for i in range(0, len(requests), batch):
            rows = requests[i:i + batch]
            texts += engine.complete_rows([(turn.messages, model) for turn, model in rows], **sampling)
            print(f"answered {len(texts)}/{len(requests)} ({time.monotonic() - started:.0f} s)", flush=True)
    finally:
        engine.close()
    answers = []
    per_model: dict[str, dict] = {m: {"answers": 0, "quotes_verified": 0, "loops": 0} for m in models}
    for (turn, model), text in zip(requests, texts):
        result = rag.postprocess(text, turn.documents)
        stats = per_model[model]
        stats["answers"] += 1
        stats["quotes_verified"] += bool(result.quotes_verified)
        stats["loops"] += loops(text)
        answers.append({"model": model, "question": turn.messages[-1]["content"][-300:], "text": text,
                        "quotes_verified": result.quotes_verified})
    print(f"answer seconds {time.monotonic() - started:.0f}; questions without documents: {without_documents}")
    for model, stats in per_model.items():
        n = stats["answers"] or 1
        stats["quote_rate"], stats["loop_rate"] = stats["quotes_verified"] / n, stats["loops"] / n
        print(f"{model:<6} quotes verified {stats['quote_rate']:.0%} ({stats['quotes_verified']}/{stats['answers']}), "
              f"looping {stats['loop_rate']:.0%} ({stats['loops']}/{stats['answers']})")
        checks.append((f"{model} loops on <= {TARGETS['loop_max']:.0%}", stats["loop_rate"] <= TARGETS["loop_max"]))
    if "raft" in per_model:
        checks.append((f"raft quotes verified >= {TARGETS['raft_quotes']:.0%}",
                       per_model["raft"]["quote_rate"] >= TARGETS["raft_quotes"]))
    if "rlhf" in per_model:
        checks.append((f"rlhf quotes verified >= {TARGETS['rlhf_quotes']:.0%}",
                       per_model["rlhf"]["quote_rate"] >= TARGETS["rlhf_quotes"]))
    figures["models"] = per_model
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    if args.json:
        args.json.write_text(json.dumps({**figures, "checks": checks, "answers": answers}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
