"""Step `build`: cleaned threads -> the SFT, RAFT, preference and golden datasets.

One thread gives one question (its title + body) and, from its replies, the answers:

* sft         the best reply (plus the second when it adds something) as the assistant turn;
* raft        RAFT (arXiv 2403.10131): the question with the oracle chunk and k distractor chunks
              (probability p) or distractors only (1 - p), and a chain-of-thought answer quoting
              the oracle; a few "I don't know" rows whose documents come from unrelated threads;
* preference  best reply = chosen, a clearly lower-scored (or low-effort) reply = rejected;
* golden      held-out questions with the best reply as reference answer, for evaluation.

Every split is decided per thread by a seeded hash of its id, never by row, so a thread's text
is in one split only; golden threads appear nowhere else, not even as RAFT distractors. Every
random choice is drawn from a generator seeded with the thread id, so a rerun on the same
threads writes byte-identical datasets, whatever order the threads come in.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from raft import Document, build_cot_answer, build_user_message
from retrieval.chunking import TokenChunker, chunk_thread, chunker_from_settings
from settings import ConfigError, Settings, build_dataclass

THREAD_COLUMNS = ("thread_id", "subreddit", "title", "body", "permalink", "comments")
DATASET_NAMES = ("sft", "raft", "preference", "golden")
GOLDEN_IDS_FILE = "golden_thread_ids.json"
REPORT_FILE = "report.json"

TRAIN, VALIDATION = "train", "validation"
RANDOM, RETRIEVAL = "random", "retrieval"


class DatasetBuildError(RuntimeError):
    """The threads cannot be turned into datasets (missing, malformed or too few)."""


@dataclasses.dataclass(frozen=True)
class DatasetsConfig:
    """The `data.datasets` section of wayfarer.yaml (see the comments there)."""

    seed: int | None
    golden_fraction: float
    golden_min_threads: int
    validation_fraction: float
    question_max_chars: int
    answer_min_chars: int
    answer_max_chars: int
    preference_answer_max_chars: int
    sft_second_comment_score_ratio: float | None
    raft_oracle_probability: float
    raft_distractors: int
    raft_idk_fraction: float
    raft_idk_answer: str
    raft_max_quotes: int
    raft_quote_min_chars: int
    raft_quote_max_chars: int
    raft_answer_max_chars: int
    raft_hard_negatives: bool
    preference_min_score_gap: int
    preference_max_pairs_per_thread: int

    def __post_init__(self) -> None:
        for name in ("golden_fraction", "validation_fraction", "raft_idk_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"data.datasets.{name} must be in [0, 1)")
        if not 0 <= self.raft_oracle_probability <= 1:
            raise ConfigError("data.datasets.raft_oracle_probability must be in [0, 1]")
        for name in ("raft_distractors", "raft_max_quotes", "preference_max_pairs_per_thread",
                     "question_max_chars", "answer_max_chars", "raft_answer_max_chars",
                     "preference_answer_max_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.datasets.{name} must be at least 1")
        if self.golden_min_threads < 0 or self.preference_min_score_gap < 0 or self.answer_min_chars < 0:
            raise ConfigError("data.datasets: golden_min_threads, preference_min_score_gap and "
                              "answer_min_chars cannot be negative")
        if self.raft_quote_min_chars > self.raft_quote_max_chars:
            raise ConfigError("data.datasets.raft_quote_min_chars is above raft_quote_max_chars")

    @classmethod
    def from_settings(cls, settings: Settings) -> "DatasetsConfig":
        config = build_dataclass(cls, settings.section("data")["datasets"])
        if config.seed is None:
            config = dataclasses.replace(config, seed=settings.config.runtime.seed)
        return config


@dataclasses.dataclass
class BuildReport:
    threads_path: str
    output_path: str
    seed: int
    threads_total: int = 0
    threads_usable: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> threads
    golden_threads: int = 0
    rows: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # dataset -> split -> rows
    raft_oracle_share: float = 0.0  # among rows that answer (the "I don't know" rows excluded)
    raft_idk_share: float = 0.0
    distractor_source: str = RANDOM  # "retrieval" when the index gave hard negatives
    distractor_fallback_reason: str | None = None
    index_fingerprint: str | None = None  # the index the hard negatives and preference documents came from
    index_collection: str | None = None
    distractor_rows: dict[str, int] = dataclasses.field(default_factory=dict)  # per-row source -> rows

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def format(self) -> str:
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items())) or "none"
        lines = [
            f"Datasets from {self.threads_total} threads in {self.threads_path}",
            f"  usable threads   {self.threads_usable} (skipped: {skipped})",
            f"  golden           {self.golden_threads} held-out threads",
        ]
        for name in ("sft", "raft", "preference"):
            splits = self.rows.get(name, {})
            lines.append(f"  {name:<16} train {splits.get(TRAIN, 0):>6}   validation {splits.get(VALIDATION, 0):>6}")
        lines.append(f"  raft oracle      {self.raft_oracle_share:.1%} of answerable rows; "
                     f"\"I don't know\" rows {self.raft_idk_share:.1%}")
        source = self.distractor_source
        if self.distractor_fallback_reason:
            source += f" (no hard negatives: {self.distractor_fallback_reason})"
        lines.append(f"  raft distractors {source}; rows by source {dict(sorted(self.distractor_rows.items()))}")
        if self.index_collection:
            lines.append(f"  index            {self.index_collection}, fingerprint {self.index_fingerprint}")
        lines.append(f"Written to {self.output_path}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=Path, default=None,
                        help="cleaned threads dataset (default: paths.threads; ingested from the demo corpus when missing)")
    parser.add_argument("--output", type=Path, default=None, help="where the datasets go (default: paths.datasets)")
    parser.add_argument("--seed", type=int, default=None, help="seed for splits and sampling (default: data.datasets.seed or runtime.seed)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.seed is not None:
        settings = settings.with_overrides({"data": {"datasets": {"seed": args.seed}}})
    threads = Path(args.threads) if args.threads else settings.path("threads")
    try:
        if not threads_exist(threads):
            # One command from the shipped corpus to datasets: ingest first when nothing is there.
            from training.ingest import IngestError, ingest_to_threads
            from training.reddit_dump import DumpInputError

            print(f"No cleaned threads at {threads}: ingesting the demo corpus first.")
            try:
                print(ingest_to_threads(settings, output=threads).summary())
            except (IngestError, DumpInputError) as err:
                raise DatasetBuildError(f"ingesting the demo corpus failed: {err}") from err
        report = build_datasets(settings, threads=threads, output=args.output)
    except (DatasetBuildError, ConfigError) as err:
        print(f"build: {err}", file=sys.stderr)
        return 2
    print(report.format())
    return 0


def threads_exist(path: Path) -> bool:
    return (Path(path) / "state.json").is_file() or (Path(path) / "dataset_info.json").is_file()


# ---------------------------------------------------------------------------------------------
# Threads -> questions and answers


@dataclasses.dataclass(frozen=True)
class _Thread:
    thread_id: str
    subreddit: str
    title: str
    body: str
    permalink: str
    comments: tuple[dict, ...]  # best first, as cleaned

    def question(self, max_chars: int) -> str:
        title = self.title.strip()
        budget = max_chars - len(title) - 2
        # A body cut to a few words reads worse than none: drop it when the title fills the budget.
        body = _clip(self.body.strip(), budget) if self.body.strip() and budget >= 40 else ""
        return f"{title}\n\n{body}" if body else title


def _is_answer(comment: Mapping, config: DatasetsConfig) -> bool:
    """A reply to the post itself, long enough to be more than a quip."""
    return int(comment.get("depth", 0)) == 0 and len(comment["body"].strip()) >= config.answer_min_chars


def _answers(thread: _Thread, config: DatasetsConfig) -> list[dict]:
    return [c for c in thread.comments if _is_answer(c, config)]


def _hash_unit(seed: int, salt: str, thread_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, salt, thread id): stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}:{salt}:{thread_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _rng(seed: int, salt: str, thread_id: str) -> random.Random:
    return random.Random(f"{seed}:{salt}:{thread_id}")  # str seeds hash with SHA-512: reproducible


def _clip(text: str, max_chars: int) -> str:
    """At most `max_chars`, cut after a sentence when one ends in the second half, else at a word."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    window = text[:max_chars]
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", window) if m.end() > max_chars // 2]
    if ends:
        return window[: ends[-1]].strip()
    space = window.rfind(" ", 0, max_chars - 1)
    return window[: space if space > max_chars // 2 else max_chars - 1].rstrip() + "…"


_WORD_RE = re.compile(r"[a-z0-9']+")


def _words(text: str) -> set[str]:
    return set(_WORD_RE.findall(text.casefold()))


def _sft_answer(answers: Sequence[dict], config: DatasetsConfig) -> str:
    best = answers[0]["body"].strip()
    ratio = config.sft_second_comment_score_ratio
    if ratio is not None and len(answers) > 1 and answers[0]["score"] > 0:
        second = answers[1]["body"].strip()
        words_best, words_second = _words(best), _words(second)
        overlap = len(words_best & words_second) / max(len(words_best | words_second), 1)
        # "Adds": well rated too, mostly new words, and the two still fit under the length cap.
        if (answers[1]["score"] >= ratio * answers[0]["score"] and overlap < 0.5
                and len(best) + len(second) + 2 <= config.answer_max_chars):
            return f"{best}\n\n{second}"
    return _clip(best, config.answer_max_chars)


# ---------------------------------------------------------------------------------------------
# Splits


@dataclasses.dataclass(frozen=True)
class _Splits:
    golden: frozenset[str]
    validation: frozenset[str]  # non-golden threads; all other non-golden threads are train

    def of(self, thread_id: str) -> str:
        return "golden" if thread_id in self.golden else VALIDATION if thread_id in self.validation else TRAIN


def _pick_by_hash(ids: Sequence[str], fraction: float, minimum: int, seed: int, salt: str) -> set[str]:
    """The ids whose hash falls under `fraction`, topped up to `minimum` with the next-lowest
    hashes. Both rules take the lowest hashes, so a thread once picked stays picked as the
    corpus grows (a golden question never drifts into training)."""
    ranked = sorted(ids, key=lambda tid: (_hash_unit(seed, salt, tid), tid))
    below = sum(1 for tid in ranked if _hash_unit(seed, salt, tid) < fraction)
    return set(ranked[: min(max(below, minimum), len(ranked))])


def _split_threads(threads: Sequence[_Thread], answerable: set[str], config: DatasetsConfig) -> _Splits:
    # Only threads with an answer can be golden (they need a reference answer); keep at least
    # half of them for training when the corpus is small.
    candidates = sorted(answerable)
    golden_min = min(config.golden_min_threads, len(candidates) // 2)
    golden = _pick_by_hash(candidates, config.golden_fraction, golden_min, config.seed, "golden")
    rest = sorted(t.thread_id for t in threads if t.thread_id not in golden)
    rest_answerable = [tid for tid in rest if tid in answerable]
    minimum = 1 if config.validation_fraction > 0 and len(rest_answerable) > 1 else 0
    validation = _pick_by_hash(rest_answerable, config.validation_fraction, minimum, config.seed, "validation")
    # Unanswerable threads only serve as distractor text; give them a split by the same hash rule.
    validation |= {tid for tid in rest if tid not in answerable
                   and _hash_unit(config.seed, "validation", tid) < config.validation_fraction}
    return _Splits(golden=frozenset(golden), validation=frozenset(validation))


# ---------------------------------------------------------------------------------------------
# RAFT


def _sentences(text: str) -> list[str]:
    pieces = []
    for line in text.splitlines():
        for sentence in re.split(r"(?<=[.!?])\s+", line):
            # Drop list markers at the front; what remains is still a verbatim span of the text.
            sentence = re.sub(r"^(?:[-*•>]+|\d+[.)])\s+", "", sentence.strip()).strip()
            if sentence:
                pieces.append(sentence)
    return pieces


def _informativeness(sentence: str) -> float:
    words = _WORD_RE.findall(sentence.casefold())
    long_words = sum(1 for w in words if len(w) > 3)
    digits = sum(1 for w in words if any(ch.isdigit() for ch in w))  # prices, times, distances
    capitals = len(re.findall(r"(?<!^)(?<![.!?] )\b[A-Z][a-z]+", sentence))  # place names
    return long_words + 2 * digits + capitals - (3 if sentence.endswith("?") else 0)


def _ranked_quotes(answer: str, config: DatasetsConfig) -> list[str]:
    """Sentences of the best reply worth quoting, the most informative first."""
    sentences = [s for s in _sentences(answer) if len(s) <= config.raft_quote_max_chars and "##" not in s]
    candidates = [s for s in sentences if len(s) >= config.raft_quote_min_chars and not s.endswith("?")]
    candidates = candidates or sentences
    order = sorted(range(len(candidates)), key=lambda i: (-_informativeness(candidates[i]), i))
    return [candidates[i] for i in order]


@dataclasses.dataclass(frozen=True)
class _Chunk:
    document: Document
    thread_id: str
    subreddit: str


def _thread_chunks(thread: _Thread, chunker: TokenChunker, max_comments: int) -> list[_Chunk]:
    """The thread cut exactly as the index cuts it (the same chunk_thread: same text, ids)."""
    record = {"thread_id": thread.thread_id, "title": thread.title, "body": thread.body, "comments": thread.comments}
    return [
        _Chunk(Document(doc_id=chunk_id, text=piece, title=thread.title,
                        subreddit=thread.subreddit, permalink=thread.permalink),
               thread.thread_id, thread.subreddit)
        for chunk_id, piece in chunk_thread(record, chunker, max_comments)
    ]


def _oracle(chunks: Sequence[_Chunk], ranked_quotes: Sequence[str], max_quotes: int) -> tuple[_Chunk, list[str]] | None:
    """The first chunk holding the best quotable sentence verbatim (a sentence cut by a chunk
    boundary is in none), with up to `max_quotes` of the best sentences it holds, in text order."""
    for best in ranked_quotes:
        chunk = next((c for c in chunks if best in c.document.text), None)
        if chunk is None:
            continue
        held = [q for q in ranked_quotes if q in chunk.document.text][:max_quotes]
        return chunk, sorted(held, key=chunk.document.text.index)
    return None


class _DistractorPool:
    """Random chunks of other threads, drawn per thread from that thread's own generator."""

    def __init__(self, chunks_by_thread: Mapping[str, Sequence[_Chunk]], allowed: Sequence[str]):
        self._chunks = chunks_by_thread
        self._threads = [tid for tid in sorted(allowed) if chunks_by_thread.get(tid)]

    def draw(self, rng: random.Random, count: int, exclude_thread: str, avoid_subreddit: str | None = None) -> list[_Chunk]:
        """`count` chunks from distinct threads other than `exclude_thread` (fewer if the pool
        is that small); with `avoid_subreddit`, prefer threads of other subreddits."""
        candidates = [tid for tid in self._threads if tid != exclude_thread]
        if len(candidates) <= count:
            picked_threads = candidates
        else:
            picked_threads, seen = [], set()
            attempts = 0
            while len(picked_threads) < count and attempts < 50 * count:
                attempts += 1
                tid = candidates[rng.randrange(len(candidates))]
                if tid in seen:
                    continue
                if avoid_subreddit and attempts < 25 * count and self._chunks[tid][0].subreddit == avoid_subreddit:
                    continue
                seen.add(tid)
                picked_threads.append(tid)
            for tid in candidates:  # tiny pools with bad luck: fill in order
                if len(picked_threads) >= count:
                    break
                if tid not in seen:
                    seen.add(tid)
                    picked_threads.append(tid)
        return [self._chunks[tid][rng.randrange(len(self._chunks[tid]))] for tid in picked_threads]


class _HardNegatives:
    """Chunks that retrieval ranks high for the question but that come from other threads."""

    def __init__(self, retriever: Any):
        self._retriever = retriever
        self.collection = f"{retriever.collection_name} ({retriever.count()} chunks)"

    @classmethod
    def open(cls, settings: Settings) -> tuple["_HardNegatives | None", str | None]:
        """The retriever over the current index, or None with the reason it cannot be used."""
        try:
            from retrieval import Retriever
            from retrieval.store import store_exists
        except ImportError as err:
            return None, f"retrieval is not available ({err})"
        if not store_exists(settings):
            return None, f"no index at {settings.path('index')}"
        try:
            retriever = Retriever.from_settings(settings)
            retriever.search("travel", k=1)  # fails here, not mid-build, when the index is unusable
        except Exception as err:  # IndexMissingError, an empty or foreign store: all mean "no index"
            return None, f"{type(err).__name__}: {err}"
        return cls(retriever), None

    def find(self, question: str, count: int, allowed: set[str], exclude_thread: str) -> list[_Chunk]:
        hits = self._retriever.search(question, k=max(4 * count, count + 8))
        found, threads = [], set()
        for hit in hits:
            if hit.thread_id == exclude_thread or hit.thread_id not in allowed or hit.thread_id in threads:
                continue
            threads.add(hit.thread_id)
            found.append(_Chunk(hit.to_document(), hit.thread_id, hit.subreddit))
            if len(found) == count:
                break
        return found

    def served(self, question: str, allowed: set[str]) -> list[Document]:
        """The documents the chatbot would put in the prompt for `question` (retrieval.top_k
        above retrieval.min_similarity), from threads the row's split may see."""
        return [hit.to_document() for hit in self._retriever.search(question) if hit.thread_id in allowed]


def _raft_row(thread: _Thread, question: str, answer: str, chunks: Sequence[_Chunk], pool: _DistractorPool,
              hard: _HardNegatives | None, allowed: set[str], config: DatasetsConfig) -> dict | None:
    rng = _rng(config.seed, "raft", thread.thread_id)
    k = config.raft_distractors
    if rng.random() < config.raft_idk_fraction:
        # Unrelated threads only (not hard negatives, which might well answer the question).
        distractors = pool.draw(rng, k + 1, thread.thread_id, avoid_subreddit=thread.subreddit)
        if not distractors:
            return None
        return _row(thread, question, [c.document for c in distractors],
                    build_cot_answer([], config.raft_idk_answer), oracle_included=False, oracle_doc_id="",
                    source=RANDOM, idk=True)
    found = _oracle(chunks, _ranked_quotes(answer, config), config.raft_max_quotes)
    if found is None:
        return None
    oracle, quotes = found
    include_oracle = rng.random() < config.raft_oracle_probability
    wanted = k if include_oracle else k + 1  # the prompt holds k + 1 documents either way
    distractors = hard.find(question, wanted, allowed, thread.thread_id) if hard else []
    sources = {RETRIEVAL} if distractors else set()
    if len(distractors) < wanted:
        taken = {c.thread_id for c in distractors}
        extra = [c for c in pool.draw(rng, wanted + len(taken), thread.thread_id) if c.thread_id not in taken]
        distractors += extra[: wanted - len(distractors)]
        if extra:
            sources.add(RANDOM)
    documents = ([oracle.document] if include_oracle else []) + [c.document for c in distractors]
    # The paper keeps the quoting chain-of-thought answer when the oracle is left out: the model
    # learns to answer from memory of the training corpus when retrieval misses.
    target = build_cot_answer(quotes, _clip(answer, config.raft_answer_max_chars))
    return _row(thread, question, documents, target, oracle_included=include_oracle,
                oracle_doc_id=oracle.document.doc_id, source="+".join(sorted(sources)) or RANDOM, idk=False)


def _row(thread: _Thread, question: str, documents: Sequence[Document], target: str, *, oracle_included: bool,
         oracle_doc_id: str, source: str, idk: bool) -> dict:
    return {
        "messages": _chat(build_user_message(question, documents), target),
        "thread_id": thread.thread_id,
        "oracle_included": oracle_included,
        "oracle_doc_id": oracle_doc_id,
        "doc_ids": sorted(doc.doc_id for doc in documents),
        "distractor_source": source,
        "idk": idk,
    }


# ---------------------------------------------------------------------------------------------
# Preference pairs


def _preference_documents(thread: _Thread, question: str, chunks: Sequence[_Chunk], pool: _DistractorPool,
                          hard: _HardNegatives | None, allowed: set[str], top_k: int,
                          config: DatasetsConfig) -> list[Document]:
    """The documents of a preference pair's prompt: RLHF starts from RAFT and is served with
    retrieval, so its pairs are asked the way the chatbot asks it. With an index: what the
    chatbot's search returns (the thread's own chunks included, as at serving time); without
    one: the thread's first chunk and random chunks of other threads, top_k in all."""
    if hard is not None:
        return hard.served(question, allowed | {thread.thread_id})
    rng = _rng(config.seed, "preference-documents", thread.thread_id)
    own = [chunks[0].document] if chunks else []
    return own + [c.document for c in pool.draw(rng, max(top_k - len(own), 0), thread.thread_id)]


def _preference_pairs(thread: _Thread, question: str, documents: Sequence[Document],
                      config: DatasetsConfig) -> list[dict]:
    answers = _answers(thread, config)
    if not answers:
        return []
    best = answers[0]
    # Replies to the post only: a reply to another comment is not an answer to the question.
    rejected = [
        c for c in thread.comments
        if c is not best and int(c.get("depth", 0)) == 0 and c["body"].strip()
        and c["body"].strip() != best["body"].strip()
        and (c["score"] <= best["score"] - config.preference_min_score_gap
             or (len(c["body"].strip()) < config.answer_min_chars and c["score"] < best["score"]))
    ]
    # The widest score gaps first: the pairs whose preference is the least doubtful.
    rejected.sort(key=lambda c: (c["score"], c.get("comment_id", ""), c["body"]))
    chosen_text = _clip(best["body"], config.preference_answer_max_chars)
    user = build_user_message(question, documents)
    doc_ids = sorted(doc.doc_id for doc in documents)
    return [
        {
            "prompt": [{"role": "user", "content": user}],
            "chosen": [{"role": "assistant", "content": chosen_text}],
            "rejected": [{"role": "assistant", "content": _clip(c["body"], config.preference_answer_max_chars)}],
            "thread_id": thread.thread_id,
            "doc_ids": doc_ids,
        }
        for c in rejected[: config.preference_max_pairs_per_thread]
    ]


# ---------------------------------------------------------------------------------------------
# Build


def _chat(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _features():
    from datasets import Features, Value

    message = [{"role": Value("string"), "content": Value("string")}]
    return {
        "sft": Features({"messages": message, "thread_id": Value("string")}),
        "raft": Features({
            "messages": message, "thread_id": Value("string"), "oracle_included": Value("bool"),
            "oracle_doc_id": Value("string"), "doc_ids": [Value("string")],
            "distractor_source": Value("string"), "idk": Value("bool"),
        }),
        "preference": Features({"prompt": message, "chosen": message, "rejected": message,
                                "thread_id": Value("string"), "doc_ids": [Value("string")]}),
        "golden": Features({
            "thread_id": Value("string"), "question": Value("string"), "reference_answer": Value("string"),
            "subreddit": Value("string"), "permalink": Value("string"),
        }),
    }


def _comment_list(comments: Any) -> list[dict]:
    # A Sequence-of-struct column reads back as a dict of lists; accept both layouts.
    if isinstance(comments, Mapping):
        keys = list(comments)
        comments = [dict(zip(keys, values)) for values in zip(*(comments[k] for k in keys))]
    result = []
    for comment in comments or []:
        result.append({
            "comment_id": str(comment.get("comment_id", "")),
            "body": str(comment.get("body") or ""),
            "score": int(comment.get("score") or 0),
            "created_utc": int(comment.get("created_utc") or 0),
            "depth": int(comment.get("depth") or 0),
        })
    return result


def _load_threads(path: Path) -> list[dict]:
    from datasets import Dataset, load_from_disk

    if not threads_exist(path):
        raise DatasetBuildError(f"no cleaned threads at {path} (run `python -m training ingest` first)")
    try:
        loaded = load_from_disk(str(path))
    except Exception as err:
        raise DatasetBuildError(f"cannot read the threads dataset at {path}: {err}") from err
    if not isinstance(loaded, Dataset):
        raise DatasetBuildError(f"{path} holds a DatasetDict; expected one Dataset of cleaned threads")
    missing = [c for c in THREAD_COLUMNS if c not in loaded.column_names]
    if missing:
        raise DatasetBuildError(f"the threads dataset at {path} lacks columns {missing} "
                                f"(has {loaded.column_names}); re-run ingestion")
    return loaded.to_list()


def _threads_and_splits(threads_path: Path, config: DatasetsConfig):
    """The cleaned threads (sorted by id), the answerable ones, what was skipped, and the splits."""
    records = _load_threads(threads_path)
    skipped: Counter[str] = Counter()
    by_id: dict[str, _Thread] = {}
    for record in records:
        thread_id = str(record["thread_id"] or "").strip()
        if not thread_id or not str(record["title"] or "").strip():
            skipped["without id or title"] += 1
            continue
        if thread_id in by_id:
            skipped["duplicate thread ids"] += 1
            continue
        by_id[thread_id] = _Thread(thread_id, str(record["subreddit"] or ""), str(record["title"]),
                                   str(record["body"] or ""), str(record["permalink"] or ""),
                                   tuple(_comment_list(record["comments"])))
    ordered = [by_id[tid] for tid in sorted(by_id)]  # input order must not change the output
    answerable = {t.thread_id for t in ordered if _answers(t, config)}
    if len(ordered) > len(answerable):
        skipped["without a substantive top-level reply"] += len(ordered) - len(answerable)
    if not answerable:
        raise DatasetBuildError(f"none of the {len(records)} threads at {threads_path} has a top-level reply of "
                                f"at least {config.answer_min_chars} characters: nothing to build")
    return records, ordered, answerable, skipped, _split_threads(ordered, answerable, config)


def write_golden_thread_ids(settings: Settings, threads: Path | None = None, output: Path | None = None) -> int:
    """Decide the held-out (golden) threads and write golden_thread_ids.json, before the index is
    built: the index leaves them out, and the datasets built after it take hard negatives from
    it. The split depends on the threads and data.datasets only, so `build` writes the same file."""
    config = DatasetsConfig.from_settings(settings)
    output_path = Path(output) if output else settings.path("datasets")
    _, _, _, _, splits = _threads_and_splits(Path(threads) if threads else settings.path("threads"), config)
    output_path.mkdir(parents=True, exist_ok=True)
    target = output_path / GOLDEN_IDS_FILE
    scratch = target.with_suffix(".tmp")
    scratch.write_text(json.dumps(sorted(splits.golden), indent=1) + "\n")
    scratch.replace(target)
    return len(splits.golden)


def build_datasets(settings: Settings, threads: Path | None = None, output: Path | None = None,
                   index_fingerprint: str | None = None) -> BuildReport:
    """Build sft/, raft/, preference/, golden/ (+ golden_thread_ids.json, report.json) under
    `output` from the cleaned threads at `threads`. Nothing is replaced unless all succeed."""
    from datasets import Dataset, DatasetDict
    from tqdm.auto import tqdm

    config = DatasetsConfig.from_settings(settings)
    retrieval_config = settings.config.retrieval
    threads_path = Path(threads) if threads else settings.path("threads")
    output_path = Path(output) if output else settings.path("datasets")
    report = BuildReport(threads_path=str(threads_path), output_path=str(output_path), seed=config.seed)

    records, ordered, answerable, skipped, splits = _threads_and_splits(threads_path, config)
    report.threads_total = len(records)
    report.threads_usable = len(answerable)
    report.golden_threads = len(splits.golden)

    chunker = chunker_from_settings(settings)
    max_comments, top_k = retrieval_config.max_comments, retrieval_config.top_k
    chunks_by_thread = {t.thread_id: _thread_chunks(t, chunker, max_comments)
                        for t in tqdm(ordered, desc="chunking threads", leave=False)}
    # Train rows see train threads only; validation rows may also see train threads. Golden
    # threads are never anyone's distractor.
    train_ids = {t.thread_id for t in ordered if splits.of(t.thread_id) == TRAIN}
    visible = {TRAIN: train_ids, VALIDATION: train_ids | set(splits.validation)}
    pools = {split: _DistractorPool(chunks_by_thread, sorted(ids)) for split, ids in visible.items()}
    hard, reason = (_HardNegatives.open(settings) if config.raft_hard_negatives
                    else (None, "disabled by data.datasets.raft_hard_negatives"))
    report.distractor_source = RETRIEVAL if hard else RANDOM
    report.distractor_fallback_reason = reason
    if hard is not None:
        report.index_collection = hard.collection
        report.index_fingerprint = index_fingerprint

    rows: dict[str, dict[str, list[dict]]] = {name: {TRAIN: [], VALIDATION: []} for name in ("sft", "raft", "preference")}
    golden_rows = []
    for thread in tqdm(ordered, desc="building examples", leave=False):
        if thread.thread_id not in answerable:
            continue
        answers = _answers(thread, config)
        question = thread.question(config.question_max_chars)
        split = splits.of(thread.thread_id)
        if split == "golden":
            golden_rows.append({
                "thread_id": thread.thread_id, "question": question,
                "reference_answer": _clip(answers[0]["body"], config.answer_max_chars),
                "subreddit": thread.subreddit, "permalink": thread.permalink,
            })
            continue
        rows["sft"][split].append({"messages": _chat(question, _sft_answer(answers, config)),
                                   "thread_id": thread.thread_id})
        raft_row = _raft_row(thread, question, answers[0]["body"].strip(), chunks_by_thread[thread.thread_id],
                             pools[split], hard, visible[split], config)
        if raft_row is None:
            skipped["without a quotable reply in the thread's document (raft only)"] += 1
        else:
            rows["raft"][split].append(raft_row)
        documents = _preference_documents(thread, question, chunks_by_thread[thread.thread_id], pools[split], hard,
                                          visible[split], top_k, config)
        rows["preference"][split].extend(_preference_pairs(thread, question, documents, config))

    features = _features()
    built = {
        name: DatasetDict({split: Dataset.from_list(split_rows, features=features[name])
                           for split, split_rows in by_split.items()})
        for name, by_split in rows.items()
    }
    built["golden"] = Dataset.from_list(golden_rows, features=features["golden"])

    report.skipped = dict(skipped)
    report.rows = {name: {split: len(r) for split, r in by_split.items()} for name, by_split in rows.items()}
    report.rows["golden"] = {"test": len(golden_rows)}
    raft_all = rows["raft"][TRAIN] + rows["raft"][VALIDATION]
    answering = [r for r in raft_all if not r["idk"]]
    report.raft_oracle_share = sum(r["oracle_included"] for r in answering) / len(answering) if answering else 0.0
    report.raft_idk_share = sum(r["idk"] for r in raft_all) / len(raft_all) if raft_all else 0.0
    report.distractor_rows = dict(Counter(r["distractor_source"] for r in raft_all))

    _write_all(output_path, built, sorted(splits.golden), report)
    return report


def _write_all(output: Path, built: Mapping[str, Any], golden_ids: list[str], report: BuildReport) -> None:
    """Save everything into a staging folder next to `output`, then swap each piece in by rename,
    so a failure while saving leaves the previous datasets as they were. Other content of
    `output` (the arena's export) is left alone."""
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-staging-", dir=output.parent))
    try:
        for name in DATASET_NAMES:
            built[name].save_to_disk(str(staging / name))
        (staging / GOLDEN_IDS_FILE).write_text(json.dumps(golden_ids, indent=1) + "\n")
        (staging / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = staging / ".replaced"
    old.mkdir()
    try:
        for name in DATASET_NAMES:
            target = output / name
            if target.exists():
                os.replace(target, old / name)
            os.replace(staging / name, target)
        for name in (GOLDEN_IDS_FILE, REPORT_FILE):
            os.replace(staging / name, output / name)
    except OSError as err:
        # Keep the staging folder: it holds the previous datasets (.replaced/) and the new ones.
        raise DatasetBuildError(f"could not move the new datasets into {output} ({err}); the previous "
                                f"ones are in {old}, the new ones in {staging}") from err
    shutil.rmtree(staging, ignore_errors=True)


def load_golden_thread_ids(datasets_dir: Path) -> set[str]:
    """The held-out thread ids written by the last build (empty when none was built)."""
    path = Path(datasets_dir) / GOLDEN_IDS_FILE
    return set(json.loads(path.read_text())) if path.is_file() else set()


__all__ = ["BuildReport", "DatasetBuildError", "DatasetsConfig", "build_datasets", "configure",
           "load_golden_thread_ids", "run", "write_golden_thread_ids"]
