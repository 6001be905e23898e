"""Votes -> training data: a DPO preference dataset and a KTO-style negative dataset.

* arena_preference/: DatasetDict train/validation with the columns of the `preference` dataset
  (prompt / chosen / rejected in trl's conversational format, thread_id), so `training rlhf`
  reads it the same way and the two can be concatenated. A model-A or model-B vote gives one
  pair; ties say nothing about which answer is better and are skipped.
* arena_negative/: "both bad" votes, one row per answer: prompt / completion / label=False,
  the unpaired format trl's KTOTrainer takes.

The prompt is exactly what both models were sent (the question, rewritten with the retrieved
documents when retrieval was on), without the system prompt, which the trainer adds. A follow-up
turn is only exported when both sides saw the same conversation; usually they did not (each saw
its own earlier answers), so such pairs would not share a prompt.
Votes from flagged (abusive) sessions are left out. thread_id is "arena-<conversation id>", so a
leak-free split keeps all turns of one conversation together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from arena.config import ArenaConfig
from arena.sessions import flagged_sessions
from arena.store import VoteStore

PREFERENCE_DIR, NEGATIVE_DIR = "arena_preference", "arena_negative"
TRAIN, VALIDATION = "train", "validation"


@dataclasses.dataclass(frozen=True)
class ExportReport:
    preference_dir: Path
    negative_dir: Path
    pairs: dict  # split -> rows
    negatives: dict  # split -> rows
    ties_skipped: int
    different_context_skipped: int
    flagged_votes_skipped: int

    def summary(self) -> str:
        return (
            f"preference pairs: {sum(self.pairs.values())} ({self.pairs[TRAIN]} train, {self.pairs[VALIDATION]} validation) "
            f"-> {self.preference_dir}\n"
            f"both-bad negatives: {sum(self.negatives.values())} rows -> {self.negative_dir}\n"
            f"skipped: {self.ties_skipped} ties, {self.different_context_skipped} follow-ups with different context, "
            f"{self.flagged_votes_skipped} votes from flagged sessions"
        )


def _features():
    from datasets import Features, Value

    message = [{"role": Value("string"), "content": Value("string")}]
    return (
        Features({"prompt": message, "chosen": message, "rejected": message, "thread_id": Value("string")}),
        Features({"prompt": message, "completion": message, "label": Value("bool"), "thread_id": Value("string")}),
    )


def _split_of(conversation_id: str, validation_fraction: float) -> str:
    bucket = int(hashlib.sha256(conversation_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return VALIDATION if bucket < validation_fraction else TRAIN


def _prompt(messages: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"]


def export_votes(store: VoteStore, config: ArenaConfig, datasets_dir: Path) -> ExportReport:
    from datasets import Dataset, DatasetDict

    battles = store.battles(voted_only=True)
    flagged = flagged_sessions(
        (b.session_hash for b in battles), (b.voted_at for b in battles), config.abuse_votes, config.abuse_minutes
    )
    pairs = {TRAIN: [], VALIDATION: []}
    negatives = {TRAIN: [], VALIDATION: []}
    ties = different = flagged_votes = 0
    for battle in battles:
        if battle.session_hash in flagged:
            flagged_votes += 1
            continue
        if battle.vote == "tie":
            ties += 1
            continue
        prompt_a, prompt_b = _prompt(battle.messages_a), _prompt(battle.messages_b)
        if prompt_a != prompt_b:
            different += 1
            continue
        split = _split_of(battle.conversation_id, config.export_validation_fraction)
        thread_id = f"arena-{battle.conversation_id}"
        answer_a = [{"role": "assistant", "content": battle.answer_a or ""}]
        answer_b = [{"role": "assistant", "content": battle.answer_b or ""}]
        if battle.vote == "both_bad":
            for answer in (answer_a, answer_b):
                negatives[split].append({"prompt": prompt_a, "completion": answer, "label": False, "thread_id": thread_id})
        else:
            chosen, rejected = (answer_a, answer_b) if battle.vote == "model_a" else (answer_b, answer_a)
            pairs[split].append({"prompt": prompt_a, "chosen": chosen, "rejected": rejected, "thread_id": thread_id})

    preference_features, negative_features = _features()
    datasets_dir = Path(datasets_dir)
    targets = {}
    for name, rows, features in ((PREFERENCE_DIR, pairs, preference_features), (NEGATIVE_DIR, negatives, negative_features)):
        built = DatasetDict(
            {
                split: Dataset.from_list(split_rows, features=features)
                if split_rows
                else Dataset.from_dict({column: [] for column in features}, features=features)
                for split, split_rows in rows.items()
            }
        )
        targets[name] = _save_replacing(built, datasets_dir / name)
    report = ExportReport(
        preference_dir=targets[PREFERENCE_DIR],
        negative_dir=targets[NEGATIVE_DIR],
        pairs={k: len(v) for k, v in pairs.items()},
        negatives={k: len(v) for k, v in negatives.items()},
        ties_skipped=ties,
        different_context_skipped=different,
        flagged_votes_skipped=flagged_votes,
    )
    (targets[PREFERENCE_DIR] / "report.json").write_text(
        json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(report).items()}, indent=2)
    )
    return report


def _save_replacing(dataset, target: Path) -> Path:
    """Write next to `target`, then swap it in: a failed export leaves the old one intact."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        # One shard per split even when empty: an empty split saved with zero shards cannot be loaded.
        dataset.save_to_disk(str(staging / "data"), num_shards={split: 1 for split in dataset})
        old = target.with_name(f".{target.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        (staging / "data").rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
