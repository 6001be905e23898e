"""Retrieval benchmark: indexing throughput and query latency, one line per figure.

    .venv/bin/python bench/retrieval_bench.py [--synthetic 100000] [--queries 50]

1. Indexing throughput: the demo corpus (data/demo) is ingested into a temporary folder and
   indexed with the configured embedder; chunks embedded and written per second.
2. Query latency at the demo index size, p50 and p95 over the probe questions: the whole
   Retriever.search (embed the question + Chroma HNSW search), and the vector search alone.
3. The same at --synthetic chunks: random unit vectors written straight into a collection
   (embedding 100k texts would take most of an hour on a CPU and measures nothing new), queried
   through the same Retriever with real questions.
Everything is written under a temporary folder; the configured index is never touched.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from settings import apply_runtime, load_settings  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _questions(demo: Path, limit: int) -> list[str]:
    questions = []
    for path in sorted(demo.glob("probes_*.jsonl")):
        questions += [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]
    fallback = ["cheapest way from the airport to the city", "is tipping expected", "best month to visit"]
    questions = questions or fallback
    return [questions[i % len(questions)] for i in range(limit)]


def _latencies(retriever, collection, questions: list[str]) -> tuple[list[float], list[float]]:
    """Milliseconds per query: the whole search (embed + HNSW), and the HNSW search alone."""
    retriever.search(questions[0], k=4)  # warm-up: the first query pays for lazy set-up
    full = []
    for question in questions:
        started = time.perf_counter()
        retriever.search(question, k=4, min_similarity=-1)
        full.append((time.perf_counter() - started) * 1000)
    vectors = retriever.embedder.embed(questions)
    search_only = []
    for vector in vectors:
        started = time.perf_counter()
        collection.query(query_embeddings=vector[None, :], n_results=4, include=["documents", "metadatas", "distances"])
        search_only.append((time.perf_counter() - started) * 1000)
    return full, search_only


def _report_latency(label: str, times: tuple[list[float], list[float]]) -> None:
    for kind, values in zip(("query latency", "vector search latency"), times):
        print(f"{kind} p50 ({label}): {statistics.median(values):.1f} ms", flush=True)
        print(f"{kind} p95 ({label}): {_percentile(values, 0.95):.1f} ms", flush=True)


def _synthetic_collection(client, name: str, dimension: int, count: int, seed: int = 0):
    import numpy as np

    collection = client.create_collection(name, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)
    rng = np.random.default_rng(seed)
    batch = client.get_max_batch_size()
    subreddits = ["travel", "JapanTravel", "solotravel", "lisbon", "VietNam"]
    started = time.perf_counter()
    for start in range(0, count, batch):
        size = min(batch, count - start)
        vectors = rng.standard_normal((size, dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"s{n:07d}-0" for n in range(start, start + size)]
        collection.add(
            ids=ids,
            embeddings=vectors,
            documents=[f"synthetic chunk {n}" for n in range(start, start + size)],
            metadatas=[
                {"thread_id": f"s{n:07d}", "chunk": 0, "subreddit": subreddits[n % 5], "score": n % 500,
                 "created_utc": 1_640_995_200 + n * 60, "permalink": "", "title": f"synthetic {n}", "content_hash": ""}
                for n in range(start, start + size)
            ],
        )
    return collection, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=100_000, help="chunks in the large synthetic index (0: skip)")
    parser.add_argument("--queries", type=int, default=50, help="queries per latency figure")
    args = parser.parse_args(argv)

    base = load_settings()
    apply_runtime(base)
    from retrieval import Retriever, RetrievalConfig, build_index
    from retrieval.store import open_client

    with tempfile.TemporaryDirectory(prefix="wayfarer-bench-") as home:
        settings = base.with_overrides({"paths": {"home": home}})
        demo = base.path("demo_corpus")
        from training.ingest import ingest_to_threads

        ingest_to_threads(settings, inputs=[demo], progress=False)
        report = build_index(settings, progress=False)
        retriever = Retriever.from_settings(settings)
        print(
            f"indexing throughput ({report.embedded} chunks, {report.threads} threads, "
            f"{base.get('embedder.model')} on {retriever.embedder.device}): {report.chunks_per_second:.1f} chunks/s",
            flush=True,
        )
        questions = _questions(demo, args.queries)
        client = open_client(settings)
        demo_collection = client.get_collection(retriever.collection_name)
        _report_latency(f"demo index, {retriever.count()} chunks", _latencies(retriever, demo_collection, questions))

        if args.synthetic > 0:
            collection, seconds = _synthetic_collection(
                client, "bench-synthetic", retriever.embedder.identity.dimension, args.synthetic
            )
            print(f"synthetic insert throughput ({args.synthetic} precomputed vectors): {args.synthetic / seconds:.0f} chunks/s", flush=True)
            large = Retriever(collection, retriever.embedder, RetrievalConfig.from_settings(settings))
            _report_latency(f"synthetic index, {collection.count()} chunks", _latencies(large, collection, questions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
