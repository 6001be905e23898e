"""Evidence benchmark: does "What travellers said" quote the right thread first?

    .venv/bin/python bench/evidence_bench.py [--paraphrases tests/data/evidence_paraphrases.jsonl]

The demo corpus (data/demo) is ingested and indexed into a temporary folder with the configured
embedder; then every paraphrased question (written by hand from demo thread titles, never tuned
against) goes through the chat's evidence path (RagChat.evidence_for: retrieval.top_k hits above
retrieval.min_similarity, reply sentences ranked by the embedder). Printed, one line each:

    first evidence sentence from the right thread   the figure issue 17 asks for (>= 0.8)
    any evidence sentence from the right thread
    top retrieval hit from the right thread         for comparison: what the ranking adds or loses

Nothing configured is touched; the thresholds are wayfarer.yaml's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from chatbot.calibration import cpu_model  # noqa: E402
from settings import apply_runtime, load_settings  # noqa: E402


def load_paraphrases(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paraphrases", type=Path, default=REPO / "tests" / "data" / "evidence_paraphrases.jsonl")
    parser.add_argument("--verbose", action="store_true", help="print every question's first evidence sentence")
    args = parser.parse_args(argv)

    base = load_settings()
    apply_runtime(base)
    from chatbot.evidence import EvidenceConfig
    from chatbot.rag import RagChat
    from retrieval import RetrievalConfig, Retriever, build_index
    from training.ingest import ingest_to_threads

    paraphrases = load_paraphrases(args.paraphrases)
    with tempfile.TemporaryDirectory(prefix="wayfarer-evidence-bench-") as home:
        settings = base.with_overrides({"paths": {"home": home}})
        ingest_to_threads(settings, inputs=[base.path("demo_corpus")], progress=False)
        build_index(settings, progress=False)
        retriever = Retriever.from_settings(settings)
        config = RetrievalConfig.from_settings(settings)
        rag = RagChat(None, retriever, config.top_k, evidence=EvidenceConfig.from_settings(settings))

        first = anywhere = top_hit = 0
        started = time.perf_counter()
        for item in paraphrases:
            evidence = rag.evidence_for(item["question"])
            hits = retriever.search(item["question"], k=config.top_k)
            right = item["thread_id"]
            first += bool(evidence) and evidence[0].thread_id == right
            anywhere += any(e.thread_id == right for e in evidence)
            top_hit += bool(hits) and hits[0].thread_id == right
            if args.verbose:
                shown = f"{evidence[0].thread_id} {evidence[0].similarity:.2f} {evidence[0].text[:90]!r}" if evidence else "-"
                print(f"{'ok  ' if evidence and evidence[0].thread_id == right else 'MISS'} {right}: {shown}")
        per_question_ms = (time.perf_counter() - started) * 1000 / max(len(paraphrases), 1)

    n = len(paraphrases)
    print(f"questions: {n} paraphrases of demo threads ({args.paraphrases.name}); embedder {base.get('embedder.model')}; "
          f"top_k {config.top_k}, min_similarity {config.min_similarity:g}")
    print(f"first evidence sentence from the right thread: {first / n:.3f} ({first}/{n})")
    print(f"any evidence sentence from the right thread: {anywhere / n:.3f} ({anywhere}/{n})")
    print(f"top retrieval hit from the right thread: {top_hit / n:.3f} ({top_hit}/{n})")
    print(f"evidence + search per question: {per_question_ms:.0f} ms on {cpu_model()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
