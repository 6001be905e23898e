"""The per-method datasets (training/datasets/) built from small constructed threads.

Threads are real `datasets` Datasets with the cleaned-thread schema; every assertion is checked
against the threads themselves (chunks recomputed with the shared chunker), not against the
builder's own bookkeeping.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict, Features, Value, load_from_disk

from raft import ANSWER_TAG, BEGIN_QUOTE, has_documents, parse_answer
from corpus import chunk_thread, load_golden_thread_ids
from retrieval.chunking import chunker_from_settings
from settings import ConfigError, load_settings
from training.datasets import DatasetBuildError, DatasetsConfig, build_datasets

REPO = Path(__file__).resolve().parents[1]

THREAD_FEATURES = Features({
    "thread_id": Value("string"), "subreddit": Value("string"), "title": Value("string"),
    "body": Value("string"), "permalink": Value("string"), "score": Value("int64"),
    "num_comments": Value("int64"), "created_utc": Value("int64"),
    "comments": [{
        "comment_id": Value("string"), "body": Value("string"), "score": Value("int64"),
        "created_utc": Value("int64"), "depth": Value("int64"),
    }],
})

PLACES = ["Tokyo", "Kyoto", "Lisbon", "Porto", "Hanoi", "Reykjavik", "Oaxaca", "Rome", "Seoul", "Bangkok"]
SUBREDDITS = ["JapanTravel", "solotravel", "travel", "europetravel", "VietNam"]
CHUNKING = {"chunk_tokens": 96, "chunk_overlap_tokens": 16, "max_comments": 3}


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def make_thread(i: int) -> dict:
    rng = random.Random(i)
    place, sub = PLACES[i % len(PLACES)], SUBREDDITS[i % len(SUBREDDITS)]
    tid = _base36(1_000_000 + 7919 * i)
    minutes, price = rng.randint(20, 90), rng.randint(5, 60)
    best = (f"Take the express train number {i} from {place} airport, it runs every {minutes} minutes. "
            f"A ticket costs about {price} dollars and you can pay by card at the machines. "
            "Avoid the taxis at night because they are expensive. Have fun!")
    if i % 3 == 0:  # a long best reply, so the thread spans several chunks
        best += "\n\n" + " ".join(f"Tip {j} for trip {i}: keep your receipt for the refund desk." for j in range(8))
    comments = [
        {"comment_id": f"c{i}a", "body": best, "score": 40 + rng.randint(0, 30), "created_utc": 1_700_000_100, "depth": 0},
        {"comment_id": f"c{i}r", "body": f"Thanks, this helped me on trip {i} as well, good advice.",
         "score": 30, "created_utc": 1_700_000_150, "depth": 1},
        {"comment_id": f"c{i}b", "body": f"The night bus to central {place} is cheaper at {price // 2} dollars but slow, "
                                          "roughly twice the time of the train.",
         "score": 12 + rng.randint(0, 10), "created_utc": 1_700_000_200, "depth": 0},
        {"comment_id": f"c{i}c", "body": "just walk lol", "score": 1, "created_utc": 1_700_000_300, "depth": 0},
    ]
    if i % 7 == 0:  # close scores: no preference pair may come from these two
        comments = [comments[0], dict(comments[2], score=comments[0]["score"] - 1)]
    comments.sort(key=lambda c: -c["score"])
    return {
        "thread_id": tid, "subreddit": sub,
        "title": f"Best way from {place} airport to the centre (trip {i})?",
        "body": f"I land at {place} at 23:00 on trip {i}. What is the cheapest way into the city?" if i % 4 else "",
        "permalink": f"https://www.reddit.com/r/{sub}/comments/{tid}/trip_{i}/",
        "score": rng.randint(1, 200), "num_comments": len(comments), "created_utc": 1_700_000_000 + i,
        "comments": comments,
    }


def save_threads(path: Path, threads: list[dict]) -> Path:
    Dataset.from_list(threads, features=THREAD_FEATURES).save_to_disk(str(path))
    return path


def make_settings(home: Path, **datasets_config):
    return load_settings(profile="local", overrides={
        # The paper's P = 0.8 (the local profile trains with 1.0), so rows without the oracle are tested too.
        "paths": {"home": str(home)}, "retrieval": CHUNKING,
        "data": {"datasets": {"raft_oracle_probability": 0.8, **datasets_config}},
    })


_CHUNKERS: dict = {}


def thread_chunks(thread: dict, settings=None) -> dict[str, str]:
    """The thread's chunks recomputed with the shared chunker (the real embedder's tokenizer)."""
    settings = settings or make_settings(Path("/nonexistent-home"))
    key = json.dumps(settings.section("retrieval"), sort_keys=True, default=str)
    if key not in _CHUNKERS:
        _CHUNKERS[key] = chunker_from_settings(settings)
    return dict(chunk_thread(thread, _CHUNKERS[key], settings.config.retrieval.max_comments))


def comment_with(text: str, comments: list[dict]) -> dict:
    """The comment a (possibly clipped) chosen/rejected text was cut from (a RAFT-format answer:
    the reply follows the answer tag)."""
    head = text.rpartition(ANSWER_TAG)[2].strip().rstrip("…")
    return next(c for c in comments if c["body"].startswith(head))


def thread_ids_of(dataset) -> set[str]:
    return set(dataset["thread_id"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """400 threads built once: big enough for the shares to be measured."""
    home = tmp_path_factory.mktemp("datasets-home")
    threads = [make_thread(i) for i in range(400)]
    settings = make_settings(home)
    save_threads(settings.path("threads"), threads)
    report = build_datasets(settings)
    out = settings.path("datasets")
    return {"threads": {t["thread_id"]: t for t in threads}, "report": report, "out": out, "settings": settings,
            "loaded": {name: load_from_disk(str(out / name)) for name in ("sft", "raft", "preference", "golden")}}


def test_chat_format_columns(corpus):
    sft, raft, pref, golden = (corpus["loaded"][n] for n in ("sft", "raft", "preference", "golden"))
    for dataset in (sft, raft, pref):
        assert isinstance(dataset, DatasetDict) and set(dataset) == {"train", "validation"}
        assert len(dataset["train"]) > len(dataset["validation"]) > 0
    assert set(sft["train"].column_names) == {"messages", "thread_id"}
    assert set(raft["train"].column_names) == {"messages", "thread_id", "oracle_included", "oracle_doc_id",
                                               "doc_ids", "distractor_source", "idk"}
    assert set(pref["train"].column_names) == {"prompt", "chosen", "rejected", "thread_id", "doc_ids"}
    assert isinstance(golden, Dataset)
    assert set(golden.column_names) == {"thread_id", "question", "reference_answer", "subreddit", "permalink"}
    for row in list(sft["train"]) + list(raft["train"]):
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]  # no system message
        assert all(m["content"].strip() for m in row["messages"])
    threads = corpus["threads"]
    for row in sft["train"]:
        thread = threads[row["thread_id"]]
        assert row["messages"][0]["content"].startswith(thread["title"])
        assert row["messages"][1]["content"].startswith(thread["comments"][0]["body"][:60])
    for row in pref["train"]:
        assert [m["role"] for m in row["prompt"]] == ["user"]
        assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    for row in golden:
        thread = threads[row["thread_id"]]
        assert row["question"].startswith(thread["title"]) and row["reference_answer"]
        assert row["permalink"] == thread["permalink"]


def test_golden_threads_never_in_training(corpus):
    golden = corpus["loaded"]["golden"]
    golden_ids = thread_ids_of(golden)
    assert len(golden_ids) >= 10
    assert golden_ids == load_golden_thread_ids(corpus["out"])
    golden_questions = set(golden["question"])
    for name in ("sft", "raft", "preference"):
        for split in ("train", "validation"):
            rows = corpus["loaded"][name][split]
            assert not golden_ids & thread_ids_of(rows), (name, split)
            column = "prompt" if name == "preference" else "messages"
            users = [row[column][0]["content"] for row in rows]
            assert not any(q in u for q in golden_questions for u in users), (name, split)
    for split in ("train", "validation"):
        for doc_ids in corpus["loaded"]["raft"][split]["doc_ids"]:
            assert not {d.rsplit("-", 1)[0] for d in doc_ids} & golden_ids  # not even as distractors


def test_splits_are_leak_free_by_thread(corpus):
    loaded = corpus["loaded"]
    train_ids, validation_ids = set(), set()
    for name in ("sft", "raft", "preference"):
        train_ids |= thread_ids_of(loaded[name]["train"])
        validation_ids |= thread_ids_of(loaded[name]["validation"])
    assert train_ids and validation_ids and not train_ids & validation_ids
    # A train prompt never shows a validation thread's text as a distractor.
    for doc_ids in loaded["raft"]["train"]["doc_ids"]:
        assert not {d.rsplit("-", 1)[0] for d in doc_ids} & validation_ids


def test_raft_oracle_share_quotes_and_idk(corpus):
    threads, raft = corpus["threads"], corpus["loaded"]["raft"]
    config = DatasetsConfig.from_settings(corpus["settings"])
    rows = list(raft["train"]) + list(raft["validation"])
    answering = [r for r in rows if not r["idk"]]
    assert len(answering) > 300
    oracle_share = sum(r["oracle_included"] for r in answering) / len(answering)
    assert abs(oracle_share - 0.8) < 0.07, oracle_share
    assert corpus["report"].raft_oracle_share == pytest.approx(oracle_share)
    idk_rows = [r for r in rows if r["idk"]]
    assert abs(len(idk_rows) / len(rows) - 0.05) < 0.035, len(idk_rows)
    assert idk_rows, "the idk share is measured on at least one row"

    for row in answering:
        prompt, answer = (m["content"] for m in row["messages"])
        chunks = thread_chunks(threads[row["thread_id"]])
        oracle_text = chunks[row["oracle_doc_id"]]
        parsed = parse_answer(answer)
        assert parsed.has_answer_tag and 1 <= len(parsed.quotes) <= config.raft_max_quotes
        for quote in parsed.quotes:
            assert quote in oracle_text  # verbatim, not just after normalising
            assert quote in threads[row["thread_id"]]["comments"][0]["body"]
        assert len(row["doc_ids"]) == config.raft_distractors + 1  # k + 1 documents with or without the oracle
        assert sorted(row["doc_ids"]) == row["doc_ids"]
        prompt_ids = [line.split('"')[1] for line in prompt.splitlines() if line.startswith("<DOCUMENT id=")]
        assert prompt_ids == row["doc_ids"]
        own = [d for d in row["doc_ids"] if d.rsplit("-", 1)[0] == row["thread_id"]]
        if row["oracle_included"]:
            assert own == [row["oracle_doc_id"]] and oracle_text in prompt
        else:
            assert own == [] and oracle_text not in prompt
        assert row["distractor_source"] == "random"  # no index in this home
        for doc_id in row["doc_ids"]:  # distractors are real chunks of their threads, cut the same way
            assert thread_chunks(threads[doc_id.rsplit("-", 1)[0]])[doc_id] in prompt
    for row in idk_rows:
        prompt, answer = (m["content"] for m in row["messages"])
        assert BEGIN_QUOTE not in answer and "don't know" in answer.split(ANSWER_TAG)[1]
        assert not row["oracle_included"] and row["oracle_doc_id"] == ""
        assert not any(d.rsplit("-", 1)[0] == row["thread_id"] for d in row["doc_ids"])
    assert corpus["report"].distractor_source == "random"
    assert "no index" in corpus["report"].distractor_fallback_reason


def test_preference_answers_are_written_as_the_rlhf_model_is_served_quoting_only_its_documents(corpus):
    """RLHF starts from RAFT and answers with documents: both sides of a pair are RAFT-format
    answers, and every quote is verbatim in that pair's own prompt."""
    pref = corpus["loaded"]["preference"]
    quoted = 0
    for row in list(pref["train"]) + list(pref["validation"]):
        prompt = row["prompt"][0]["content"]
        for side in ("chosen", "rejected"):
            parsed = parse_answer(row[side][0]["content"])
            assert parsed.has_answer_tag and parsed.answer, row[side]
            assert all(quote in prompt for quote in parsed.quotes), (side, parsed.quotes)
        quoted += bool(parse_answer(row["chosen"][0]["content"]).quotes)
    assert quoted, "no chosen answer quotes its documents"


def test_preference_pairs_respect_the_score_gap(corpus):
    threads, pref = corpus["threads"], corpus["loaded"]["preference"]
    per_thread: dict[str, int] = {}
    for row in list(pref["train"]) + list(pref["validation"]):
        comments = threads[row["thread_id"]]["comments"]
        chosen = comment_with(row["chosen"][0]["content"], comments)
        rejected = comment_with(row["rejected"][0]["content"], comments)
        assert chosen["score"] == max(c["score"] for c in comments if c["depth"] == 0)
        low_effort = len(rejected["body"]) < 40
        assert chosen["score"] - rejected["score"] >= 3 or (low_effort and rejected["score"] < chosen["score"])
        assert rejected["depth"] == 0
        per_thread[row["thread_id"]] = per_thread.get(row["thread_id"], 0) + 1
    assert per_thread and max(per_thread.values()) <= 3
    close_scores = {t["thread_id"] for i, t in enumerate(corpus["threads"].values()) if i % 7 == 0}
    assert not close_scores & set(per_thread)


def test_report_files(corpus):
    out = corpus["out"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["rows"]["sft"]["train"] == len(corpus["loaded"]["sft"]["train"])
    assert saved["rows"]["golden"]["test"] == len(corpus["loaded"]["golden"])
    assert saved["distractor_source"] == "random" and 0 < saved["raft_idk_share"] < 0.2
    text = corpus["report"].format()
    assert "raft" in text and "golden" in text and str(out) in text
    assert not [p for p in out.parent.iterdir() if "staging" in p.name]  # the temp folder is gone


def test_rerun_is_identical_whatever_the_input_order(tmp_path, corpus):
    threads = list(corpus["threads"].values())[:120]
    first = make_settings(tmp_path / "a")
    save_threads(first.path("threads"), threads)
    second = make_settings(tmp_path / "b")
    save_threads(second.path("threads"), list(reversed(threads)))
    build_datasets(first)
    build_datasets(second)
    build_datasets(first)  # and a rebuild over an existing output

    def digest(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file() and p.name != "report.json"}

    a, b = first.path("datasets"), second.path("datasets")
    assert digest(a) == digest(b) and any(name.endswith(".arrow") for name in digest(a))
    for name in ("sft", "raft", "preference"):
        for split in ("train", "validation"):
            assert load_from_disk(str(a / name))[split].to_list() == load_from_disk(str(b / name))[split].to_list()

    other_seed = make_settings(tmp_path / "c", seed=99)
    save_threads(other_seed.path("threads"), threads)
    build_datasets(other_seed)
    assert load_golden_thread_ids(other_seed.path("datasets")) != load_golden_thread_ids(a)


def test_small_corpus_keeps_most_threads_for_training(tmp_path):
    settings = make_settings(tmp_path)
    save_threads(settings.path("threads"), [make_thread(i) for i in range(6)])
    report = build_datasets(settings)
    assert report.golden_threads == 3  # golden_min_threads (10) is capped at half of the threads
    assert report.rows["sft"]["train"] + report.rows["sft"]["validation"] == 3


def test_bad_input_is_refused_and_loses_nothing(tmp_path):
    settings = make_settings(tmp_path)
    out = settings.path("datasets")
    out.mkdir(parents=True)
    (out / "arena_preference").mkdir()
    (out / "arena_preference" / "keep.txt").write_text("arena export")
    with pytest.raises(DatasetBuildError, match="no cleaned threads"):
        build_datasets(settings)
    broken = [{k: v for k, v in make_thread(i).items() if k != "comments"} for i in range(3)]
    Dataset.from_list(broken).save_to_disk(str(settings.path("threads")))
    with pytest.raises(DatasetBuildError, match="comments"):
        build_datasets(settings)
    no_answers = [dict(make_thread(i), comments=[]) for i in range(3)]
    save_threads(tmp_path / "empty", no_answers)
    with pytest.raises(DatasetBuildError, match="nothing to build"):
        build_datasets(settings, threads=tmp_path / "empty")
    assert sorted(p.name for p in out.iterdir()) == ["arena_preference"]
    assert (out / "arena_preference" / "keep.txt").read_text() == "arena export"

    save_threads(tmp_path / "good", [make_thread(i) for i in range(30)])
    build_datasets(settings, threads=tmp_path / "good")
    assert (out / "arena_preference" / "keep.txt").exists() and (out / "raft").is_dir()


def test_config_refuses_unknown_and_invalid_keys(tmp_path):
    assert DatasetsConfig.from_settings(make_settings(tmp_path)).seed == 1234  # runtime.seed
    assert DatasetsConfig.from_settings(make_settings(tmp_path, seed=7)).seed == 7
    with pytest.raises(ConfigError, match="unknown"):
        DatasetsConfig.from_settings(make_settings(tmp_path, oracle_probability=0.5))
    with pytest.raises(ConfigError, match="raft_oracle_probability"):
        DatasetsConfig.from_settings(make_settings(tmp_path, raft_oracle_probability=1.5))


def test_hard_negatives_come_from_the_index(tmp_path):
    from retrieval import build_index

    settings = make_settings(tmp_path, golden_min_threads=3)
    threads = [make_thread(i) for i in range(24)]
    save_threads(settings.path("threads"), threads)
    build_index(settings, progress=False)  # golden ids are not known yet: golden threads get indexed
    report = build_datasets(settings)
    assert report.distractor_source == "retrieval" and report.distractor_fallback_reason is None
    out = settings.path("datasets")
    golden = load_golden_thread_ids(out)
    raft = load_from_disk(str(out / "raft"))
    by_id = {t["thread_id"]: t for t in threads}
    validation_ids = set(raft["validation"]["thread_id"])
    rows = [(split, row) for split in ("train", "validation") for row in raft[split] if not row["idk"]]
    assert any(row["distractor_source"].startswith("retrieval") for _, row in rows)
    for split, row in rows:
        other = {d.rsplit("-", 1)[0] for d in row["doc_ids"] if d != row["oracle_doc_id"]}
        assert row["thread_id"] not in other and not other & golden
        if split == "train":
            assert not other & validation_ids
        for doc_id in row["doc_ids"]:  # the index cut them exactly like the builder does
            assert thread_chunks(by_id[doc_id.rsplit("-", 1)[0]])[doc_id] in row["messages"][0]["content"]
    # Hard negatives are near the question: same airport-transfer topic, so the same subreddit's
    # place names turn up more often than the random draw's one in five.
    same_place = sum(by_id[d.rsplit("-", 1)[0]]["title"].split()[3] == by_id[row["thread_id"]]["title"].split()[3]
                     for _, row in rows for d in row["doc_ids"] if d.rsplit("-", 1)[0] != row["thread_id"])
    others = sum(1 for _, row in rows for d in row["doc_ids"] if d.rsplit("-", 1)[0] != row["thread_id"])
    assert same_place / others > 0.3


@pytest.mark.skipif(importlib.util.find_spec("training.ingest") is None, reason="training.ingest has not landed")
def test_cli_help():
    done = subprocess.run([sys.executable, "-m", "training", "build", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--threads" in done.stdout and "--output" in done.stdout and "--seed" in done.stdout


def _demo_ready() -> bool:
    demo = REPO / "data" / "demo"
    return importlib.util.find_spec("training.ingest") is not None and demo.is_dir() and any(demo.iterdir())


@pytest.mark.skipif(not _demo_ready(), reason="needs the demo corpus in data/demo and training.ingest")
def test_one_command_from_demo_corpus(tmp_path, monkeypatch, capsys):
    from training.__main__ import main

    monkeypatch.setenv("WAYFARER__PATHS__HOME", str(tmp_path))
    assert main(["--profile", "local", "build"]) == 0
    assert "raft" in capsys.readouterr().out
    settings = load_settings(profile="local")
    threads = load_from_disk(str(settings.path("threads"))).to_list()
    by_id = {t["thread_id"]: t for t in threads}
    out = settings.path("datasets")
    golden = load_golden_thread_ids(out)
    raft = load_from_disk(str(out / "raft"))
    assert golden and len(raft["train"]) > 0
    for split in ("train", "validation"):
        for row in raft[split]:
            assert row["thread_id"] not in golden
            thread = by_id[row["thread_id"]]
            if row["idk"]:
                continue
            oracle = thread_chunks(thread, settings)[row["oracle_doc_id"]]
            quotes = parse_answer(row["messages"][1]["content"]).quotes
            assert quotes and all(q in oracle for q in quotes)
    for name in ("sft", "preference"):
        for split in ("train", "validation"):
            assert not set(load_from_disk(str(out / name))[split]["thread_id"]) & golden


# ------------------------------------------------------------------------------------ issue 14 / 17
def test_no_chunk_exceeds_what_the_embedder_reads(tmp_path):
    """Chunks are counted in the embedder's own tokens and capped by its max_seq_length (MiniLM
    reads 256, special tokens included), however large retrieval.chunk_tokens is set."""
    from retrieval.embedder import Embedder

    settings = load_settings(profile="local", overrides={
        "paths": {"home": str(tmp_path)}, "retrieval": {"chunk_tokens": 100_000, "chunk_overlap_tokens": 40}})
    embedder = Embedder.from_settings(settings)
    chunker = chunker_from_settings(settings)
    assert chunker.max_tokens <= embedder.max_seq_length - 2
    words = [f"Shinkansen{n}" if n % 17 else "Supercalifragilisticexpialidocious-" * 4 for n in range(1200)]
    text = "\n\n".join(" ".join(words[i:i + 60]) + "." for i in range(0, len(words), 60))
    thread = {"thread_id": "t1", "title": "Long thread", "body": text, "comments": [{"body": text[:3000]}]}
    chunks = [piece for _, piece in chunk_thread(thread, chunker, 3)]
    assert len(chunks) > 10
    for piece in chunks:
        assert len(embedder.tokenizer(piece)["input_ids"]) <= embedder.max_seq_length
    # Nothing is lost between chunks: every word of the text is in some chunk.
    assert all(any(word in piece for piece in chunks) for word in set(words[:200]))


def test_preference_prompts_carry_documents_as_rlhf_is_served(corpus):
    """RLHF starts from RAFT and is served with documents: its pairs are asked the same way
    (without an index: the thread's first chunk and random chunks of others, top_k in all)."""
    top_k = int(corpus["settings"].get("retrieval.top_k"))
    for split in ("train", "validation"):
        for row in corpus["loaded"]["preference"][split]:
            user = row["prompt"][0]["content"]
            assert has_documents(user)
            assert len(row["doc_ids"]) == top_k and f'<DOCUMENT id="{row["thread_id"]}-0"' in user
            prompt_ids = [line.split('"')[1] for line in user.splitlines() if line.startswith("<DOCUMENT id=")]
            assert prompt_ids == row["doc_ids"]


def test_the_pipeline_indexes_before_building_so_raft_gets_hard_negatives(tmp_path):
    """A fresh home: index (golden threads left out) -> build; the RAFT distractors come from the
    index and the build records the index's fingerprint, which is part of its own."""
    from retrieval import Retriever
    from training.pipeline import run_pipeline

    settings = make_settings(tmp_path, golden_min_threads=3)
    threads = [make_thread(i) for i in range(24)]
    save_threads(settings.path("threads"), threads)
    outcome = run_pipeline(settings, skip={"ingest"}, until="build", log=lambda _: None)
    assert [name for name, _ in outcome.ran] == ["index", "build"]
    out = settings.path("datasets")
    report = json.loads((out / "report.json").read_text())
    state = json.loads((settings.path("home") / "pipeline_state.json").read_text())
    assert report["distractor_source"] == "retrieval"
    assert report["index_fingerprint"] == state["index"]["inputs_fingerprint"]
    golden = load_golden_thread_ids(out)
    assert golden
    retriever = Retriever.from_settings(settings)
    by_id = {t["thread_id"]: t for t in threads}
    for thread_id in golden:
        hits = retriever.search(by_id[thread_id]["title"], k=10, min_similarity=-1)
        assert not {hit.thread_id for hit in hits} & golden, "a golden thread is in the index"
    raft = load_from_disk(str(out / "raft"))
    assert any(row["distractor_source"].startswith("retrieval") for row in raft["train"])
    pref = load_from_disk(str(out / "preference"))
    assert all(has_documents(row["prompt"][0]["content"]) for row in pref["train"])
