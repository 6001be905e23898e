"""The golden (held-out) threads: `golden_thread_ids.json` in the datasets folder, a JSON list
of thread ids. Training decides and writes it; the index leaves those threads out, evaluation
asks their questions, and training never trains on them."""

from __future__ import annotations

import json
from pathlib import Path

from fsutils import write_text_atomic

GOLDEN_IDS_FILE = "golden_thread_ids.json"


def load_golden_thread_ids(datasets_dir: Path) -> set[str]:
    """The held-out thread ids written by the last build (empty when none was built)."""
    path = Path(datasets_dir) / GOLDEN_IDS_FILE
    if not path.is_file():
        return set()
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of thread ids")
    return {str(thread_id) for thread_id in data}


def golden_ids_json(thread_ids) -> str:
    """The file's content for `thread_ids` (sorted, so a rebuild writes the same bytes)."""
    return json.dumps(sorted(str(t) for t in thread_ids), indent=1) + "\n"


def save_golden_thread_ids(datasets_dir: Path, thread_ids) -> Path:
    """Write the file in place of the previous one in a single rename (readers never see half)."""
    return write_text_atomic(Path(datasets_dir) / GOLDEN_IDS_FILE, golden_ids_json(thread_ids))
