"""The evaluation cache: answers, metric values and judge outputs in one SQLite file.

Keys say exactly what a value depends on, so a rerun recomputes only what changed:
  answers    (model fingerprint, question hash, retrieval on/off, prompt hash) -- the prompt hash
             covers the retrieved documents, the system prompt and the generation options
  metrics    (answer key, scorer fingerprint, reference hash)
  judgments  (judge identity, prompt hash) -- the output as JSON: a text judge's text, or the
             local judge's verdict / grade probabilities
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import time
from pathlib import Path

from modeling.adapters import ADAPTER_CONFIG_FILE, ADAPTER_METADATA_FILE, ADAPTER_WEIGHT_FILES, BASE_ADAPTER, current_adapter_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    answer_key        TEXT PRIMARY KEY,
    model             TEXT NOT NULL,
    model_fingerprint TEXT NOT NULL,
    question_hash     TEXT NOT NULL,
    retrieval         INTEGER NOT NULL,
    prompt_hash       TEXT NOT NULL,
    raw_text          TEXT NOT NULL,
    answer            TEXT NOT NULL,
    documents         TEXT NOT NULL,
    created_at        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    answer_key         TEXT NOT NULL,
    scorer_fingerprint TEXT NOT NULL,
    reference_hash     TEXT NOT NULL,
    scores             TEXT NOT NULL,
    PRIMARY KEY (answer_key, scorer_fingerprint, reference_hash)
);
CREATE TABLE IF NOT EXISTS judgments (
    judge_identity TEXT NOT NULL,
    prompt_hash    TEXT NOT NULL,
    output         TEXT NOT NULL,
    PRIMARY KEY (judge_identity, prompt_hash)
);
"""


RESULTS_FILE = "results.json"  # a run's results next to the cache (evaluation/runner.py writes, report.py reads)
SCORER_VERSION = "metrics-v3"  # bump when a metric's definition changes: cached scores are recomputed


def text_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def model_fingerprint(name: str, base_model_id: str, adapters_dir: Path) -> str:
    """The base model id for "base"; for an adapter, a hash of its weights and metadata files
    (a retrained adapter gets a new fingerprint, a renamed copy keeps its old one)."""
    digest = hashlib.sha256(f"base-model|{base_model_id}".encode())
    if name != BASE_ADAPTER:
        folder = current_adapter_dir(Path(adapters_dir) / name)  # the served version of a versioned adapter
        weights = next((folder / f for f in ADAPTER_WEIGHT_FILES if (folder / f).exists()), None)
        if weights is None:
            raise FileNotFoundError(f"adapter '{name}' has no weights under {folder}: cannot fingerprint it")
        for path in (weights, folder / ADAPTER_CONFIG_FILE, folder / ADAPTER_METADATA_FILE):
            if path.exists():
                digest.update(path.name.encode())
                with path.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
    return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class CachedAnswer:
    answer_key: str
    model: str
    raw_text: str
    answer: str
    documents: list  # [{"doc_id", "text", "title", "subreddit", "permalink"}]


class EvaluationCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    @staticmethod
    def answer_key(model_fingerprint_: str, question_hash: str, retrieval: bool, prompt_hash: str) -> str:
        return text_hash("answer", model_fingerprint_, question_hash, bool(retrieval), prompt_hash)

    def answer(self, answer_key: str) -> CachedAnswer | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT answer_key, model, raw_text, answer, documents FROM answers WHERE answer_key = ?", (answer_key,)
            ).fetchone()
        return None if row is None else CachedAnswer(row[0], row[1], row[2], row[3], json.loads(row[4]))

    def put_answer(self, answer_key: str, *, model: str, model_fingerprint_: str, question_hash: str,
                   retrieval: bool, prompt_hash: str, raw_text: str, answer: str, documents: list) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO answers VALUES (?,?,?,?,?,?,?,?,?,?)",
                (answer_key, model, model_fingerprint_, question_hash, int(retrieval), prompt_hash,
                 raw_text, answer, json.dumps(documents), time.time()),
            )

    def scores(self, answer_key: str, scorer_fingerprint: str, reference_hash: str) -> dict | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT scores FROM metrics WHERE answer_key = ? AND scorer_fingerprint = ? AND reference_hash = ?",
                (answer_key, scorer_fingerprint, reference_hash),
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def put_scores(self, answer_key: str, scorer_fingerprint: str, reference_hash: str, scores: dict) -> None:
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?)",
                         (answer_key, scorer_fingerprint, reference_hash, json.dumps(scores)))

    def judgment(self, judge_identity: str, prompt_hash: str) -> dict | None:
        """The judge's output for a prompt ({"text": ...} or {"probabilities": ...}), None if absent."""
        with self._connect() as conn:
            row = conn.execute("SELECT output FROM judgments WHERE judge_identity = ? AND prompt_hash = ?",
                               (judge_identity, prompt_hash)).fetchone()
        if row is None:
            return None
        try:
            output = json.loads(row[0])
        except ValueError:
            output = None
        # Caches written before outputs were JSON hold a text judge's raw text.
        return output if isinstance(output, dict) else {"text": row[0]}

    def put_judgment(self, judge_identity: str, prompt_hash: str, output: dict) -> None:
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO judgments VALUES (?,?,?)",
                         (judge_identity, prompt_hash, json.dumps(output, ensure_ascii=False)))

    def counts(self) -> dict[str, int]:
        with self._connect() as conn:
            return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                    for table in ("answers", "metrics", "judgments")}


def scorer_fingerprint(config) -> str:
    """What cached scores depend on besides the texts: the metrics' version, the encoder and the
    thresholds of an EvaluationConfig."""
    return text_hash(SCORER_VERSION, config.embedder, config.support_threshold, config.context_relevance_threshold)
