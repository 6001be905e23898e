"""Votes -> training data: a DPO preference dataset and a KTO-style negative dataset.

* arena_preference/: DatasetDict train/validation with the columns of the `preference` dataset
  (prompt / chosen / rejected in trl's conversational format, thread_id), so `training rlhf`
  reads it the same way and the two can be concatenated. A model-A or model-B vote gives one
  pair; ties say nothing about which answer is better and are skipped.
* arena_negative/: "both bad" votes, one row per answer: prompt / completion / label=False,
  the unpaired format trl's KTOTrainer takes.
* chat_feedback/: 👍/👎 on chat answers, one row per answer and session: prompt (what the model
  was sent, documents included) / completion / label (True for 👍), also KTO's format. Rows of
  flagged sessions are left out; thread_id is "chat-<session hash prefix>", keeping a session's
  rows in one split.

The prompt is what both models were sent, without the system prompt, which the trainer adds.
When the battle showed retrieved documents, its last user turn is the RAFT prompt built by
raft.build_user_message (the one place that format is written) from the question and the
documents the store kept with the battle (schema 2), so an arena pair trains in exactly the
format RAFT rows and the chatbot use; `doc_ids` lists those documents (empty: no retrieval),
the column the trainers read to choose the system prompt with the untrusted-documents note, as
training.examples.to_prompt_completion does for RAFT rows. Battles stored before schema 2 kept
only the ids: their prompt is the stored message, which already holds the documents' text.
A follow-up turn is only exported when both sides saw the same conversation; usually they did
not (each saw its own earlier answers), so such pairs would not share a prompt.
Votes from flagged sessions and client addresses (arena.sessions.abuse_flags) are left out
unless arena.include_flagged_votes. thread_id is "arena-<conversation id>", so a leak-free split
keeps all turns of one conversation together.

`python -m arena export --push-to-hub OWNER/NAME [--private]` also pushes the same
DatasetDicts to a Hugging Face Hub dataset repository (configurations arena_preference,
arena_negative and chat_feedback), with the token from HF_TOKEN only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

from arena.config import ArenaConfig
from arena.records import BattleRecord, VoteStore
from arena.sessions import abuse_flags
from fsutils import replacing_folder

PREFERENCE_DIR, NEGATIVE_DIR, CHAT_FEEDBACK_DIR = "arena_preference", "arena_negative", "chat_feedback"
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
    chat_feedback_dir: Path | None = None
    chat_feedback: dict = dataclasses.field(default_factory=dict)  # split -> rows

    def summary(self) -> str:
        return (
            f"preference pairs: {sum(self.pairs.values())} ({self.pairs[TRAIN]} train, {self.pairs[VALIDATION]} validation) "
            f"-> {self.preference_dir}\n"
            f"both-bad negatives: {sum(self.negatives.values())} rows -> {self.negative_dir}\n"
            f"chat feedback (KTO, 👍/👎): {sum(self.chat_feedback.values())} rows -> {self.chat_feedback_dir}\n"
            f"skipped: {self.ties_skipped} ties, {self.different_context_skipped} follow-ups with different context, "
            f"{self.flagged_votes_skipped} flagged votes (sessions or client addresses over arena.abuse_votes)"
        )


def _features():
    from datasets import Features, Value

    message = [{"role": Value("string"), "content": Value("string")}]
    doc_ids = [Value("string")]
    return (
        Features({"prompt": message, "chosen": message, "rejected": message, "thread_id": Value("string"), "doc_ids": doc_ids}),
        Features({"prompt": message, "completion": message, "label": Value("bool"), "thread_id": Value("string"),
                  "doc_ids": doc_ids}),
    )


def _split_of(conversation_id: str, validation_fraction: float) -> str:
    bucket = int(hashlib.sha256(conversation_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return VALIDATION if bucket < validation_fraction else TRAIN


def _prompt(messages: list[dict], battle: BattleRecord | None = None) -> list[dict]:
    """The turns a side was sent, without the system prompt; with stored documents the last
    user turn is rebuilt as the RAFT prompt of the battle's question and those documents."""
    from raft import Document, build_user_message

    turns = [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"]
    if battle is not None and battle.documents and turns and turns[-1]["role"] == "user":
        documents = [Document(d.doc_id, d.text, d.title, d.subreddit, d.permalink) for d in battle.documents]
        turns[-1] = {"role": "user", "content": build_user_message(battle.question, documents)}
    return turns


@dataclasses.dataclass(frozen=True)
class PreparedExport:
    """The export in memory: {arena_preference: DatasetDict, arena_negative: DatasetDict} and counts.
    The local export writes exactly these, and `--push-to-hub` pushes exactly these."""

    datasets: dict
    pairs: dict  # split -> rows
    negatives: dict
    ties_skipped: int
    different_context_skipped: int
    flagged_votes_skipped: int
    chat_feedback: dict = dataclasses.field(default_factory=dict)  # split -> rows


def _chat_feedback_rows(store: VoteStore, config: ArenaConfig, flagged: set) -> dict:
    """👍/👎 rows in KTO's unpaired format, split by session (all of a session's rows together)."""
    rows = {TRAIN: [], VALIDATION: []}
    for feedback in store.chat_feedback():
        if feedback.session_hash in flagged:
            continue
        thread_id = f"chat-{feedback.session_hash[:16]}"
        rows[_split_of(thread_id, config.export_validation_fraction)].append({
            "prompt": _prompt(feedback.prompt),
            "completion": [{"role": "assistant", "content": feedback.completion}],
            "label": feedback.liked,
            "thread_id": thread_id,
            "doc_ids": [str(d) for d in getattr(feedback, "doc_ids", None) or []],  # the KTO features carry doc_ids
        })
    return rows


def prepare_export(store: VoteStore, config: ArenaConfig) -> PreparedExport:
    """Turn the stored votes and chat feedback into the DatasetDicts (train/validation splits each)."""
    from datasets import Dataset, DatasetDict

    battles = store.battles(voted_only=True)
    flags = abuse_flags(store.votes(), config.abuse_votes, config.abuse_minutes)
    flagged = set() if config.include_flagged_votes else flags.battle_ids
    pairs = {TRAIN: [], VALIDATION: []}
    negatives = {TRAIN: [], VALIDATION: []}
    ties = different = flagged_votes = 0
    for battle in battles:
        if battle.battle_id in flagged:
            flagged_votes += 1
            continue
        if battle.vote == "tie":
            ties += 1
            continue
        prompt_a, prompt_b = _prompt(battle.messages_a, battle), _prompt(battle.messages_b, battle)
        if prompt_a != prompt_b:
            different += 1
            continue
        split = _split_of(battle.conversation_id, config.export_validation_fraction)
        thread_id = f"arena-{battle.conversation_id}"
        doc_ids = [str(d) for d in battle.doc_ids]
        answer_a = [{"role": "assistant", "content": battle.answer_a or ""}]
        answer_b = [{"role": "assistant", "content": battle.answer_b or ""}]
        if battle.vote == "both_bad":
            for answer in (answer_a, answer_b):
                negatives[split].append(
                    {"prompt": prompt_a, "completion": answer, "label": False, "thread_id": thread_id, "doc_ids": doc_ids}
                )
        else:
            chosen, rejected = (answer_a, answer_b) if battle.vote == "model_a" else (answer_b, answer_a)
            pairs[split].append(
                {"prompt": prompt_a, "chosen": chosen, "rejected": rejected, "thread_id": thread_id, "doc_ids": doc_ids}
            )

    feedback = _chat_feedback_rows(store, config, set() if config.include_flagged_votes else set(flags.sessions))
    preference_features, negative_features = _features()
    built = {}
    for name, rows, features in (
        (PREFERENCE_DIR, pairs, preference_features),
        (NEGATIVE_DIR, negatives, negative_features),
        (CHAT_FEEDBACK_DIR, feedback, negative_features),  # the same KTO columns
    ):
        built[name] = DatasetDict(
            {
                split: Dataset.from_list(split_rows, features=features)
                if split_rows
                else Dataset.from_dict({column: [] for column in features}, features=features)
                for split, split_rows in rows.items()
            }
        )
    return PreparedExport(
        datasets=built,
        pairs={k: len(v) for k, v in pairs.items()},
        negatives={k: len(v) for k, v in negatives.items()},
        ties_skipped=ties,
        different_context_skipped=different,
        flagged_votes_skipped=flagged_votes,
        chat_feedback={k: len(v) for k, v in feedback.items()},
    )


def write_export(prepared: PreparedExport, datasets_dir: Path) -> ExportReport:
    """Save both DatasetDicts under `datasets_dir` (each swapped in whole) and a report.json."""
    datasets_dir = Path(datasets_dir)
    targets = {name: _save_replacing(dataset, datasets_dir / name) for name, dataset in prepared.datasets.items()}
    report = ExportReport(
        preference_dir=targets[PREFERENCE_DIR],
        negative_dir=targets[NEGATIVE_DIR],
        pairs=prepared.pairs,
        negatives=prepared.negatives,
        ties_skipped=prepared.ties_skipped,
        different_context_skipped=prepared.different_context_skipped,
        flagged_votes_skipped=prepared.flagged_votes_skipped,
        chat_feedback_dir=targets.get(CHAT_FEEDBACK_DIR),
        chat_feedback=prepared.chat_feedback,
    )
    (targets[PREFERENCE_DIR] / "report.json").write_text(
        json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(report).items()}, indent=2)
    )
    return report


def export_votes(store: VoteStore, config: ArenaConfig, datasets_dir: Path) -> ExportReport:
    return write_export(prepare_export(store, config), datasets_dir)


# ------------------------------------------------------------------------------ Hugging Face Hub
HUB_TOKEN_ENV = "HF_TOKEN"  # huggingface_hub's standard variable; the token is never taken from a flag or a file
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of HF_HUB_OFFLINE
_REPO_ID_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")


class HubPushError(RuntimeError):
    """The push failed; the message is one line and never holds the token."""


def valid_repo_id(repo_id: str) -> bool:
    return bool(_REPO_ID_RE.match(repo_id)) and ".." not in repo_id and len(repo_id) <= 96


def hub_push_problems(settings, environ=None) -> list[str]:
    """Why a push cannot even be tried (empty when it can): no token, or the Hub switched off.
    Looks at the environment only: no network call."""
    environ = os.environ if environ is None else environ
    problems = []
    if not (environ.get(HUB_TOKEN_ENV) or "").strip():
        problems.append(
            f"{HUB_TOKEN_ENV} is not set: create a token with write access at https://huggingface.co/settings/tokens "
            f"and export {HUB_TOKEN_ENV}=... (it is read from the environment only)"
        )
    offline = [name for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if (environ.get(name) or "").upper() in _TRUE]
    if offline:
        if settings.config.runtime.offline:
            problems.append(
                f"the Hub is switched off: runtime.offline is true in profile {settings.profile!r} (it sets "
                "HF_HUB_OFFLINE=1); push with WAYFARER__RUNTIME__OFFLINE=false, or from a profile that is online"
            )
        else:
            problems.append(f"the Hub is switched off: {offline[0]}={environ[offline[0]]} is set; unset it to push")
    return problems


def hub_url(repo_id: str) -> str:
    return f"https://huggingface.co/datasets/{repo_id}"


def push_export(prepared: PreparedExport, repo_id: str, *, token: str, private: bool | None = None) -> list[str]:
    """Push both DatasetDicts to one Hub dataset repository, one configuration each (arena_preference,
    the default, and arena_negative: `load_dataset(repo_id, "arena_negative")`). Returns the pushed
    configuration names; HubPushError on any failure."""
    pushed: list[str] = []
    for name, dataset in prepared.datasets.items():
        try:
            dataset.push_to_hub(
                repo_id,
                config_name=name,
                set_default=name == PREFERENCE_DIR,
                private=private,
                token=token,
                commit_message=f"Wayfarer arena votes: {name}",
            )
        except Exception as err:  # HTTP errors, auth, offline mode, a bad repo id: one line, no token
            message = " ".join(str(err).split()) or "no message"
            if token:
                message = message.replace(token, "***")
            done = f" (already pushed: {', '.join(pushed)})" if pushed else ""
            raise HubPushError(f"pushing {name} to {hub_url(repo_id)} failed: {type(err).__name__}: {message[:500]}{done}") from None
        pushed.append(name)
    return pushed


def _save_replacing(dataset, target: Path) -> Path:
    """Write next to `target`, then swap it in: a failed export leaves the old one intact."""
    with replacing_folder(target) as staging:
        # One shard per split even when empty: an empty split saved with zero shards cannot be loaded.
        dataset.save_to_disk(str(staging), num_shards={split: 1 for split in dataset})
    return target
