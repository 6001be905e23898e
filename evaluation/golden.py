"""The golden questions: the held-out threads' questions and reference answers, as the datasets
build wrote them (datasets/golden)."""

from __future__ import annotations

import dataclasses

from evaluation.cache import text_hash
from settings import Settings


class GoldenMissingError(FileNotFoundError):
    """No golden dataset to evaluate on."""


@dataclasses.dataclass(frozen=True)
class GoldenQuestion:
    question_id: str  # the thread id
    question: str
    reference: str
    subreddit: str
    permalink: str

    @property
    def question_hash(self) -> str:
        return text_hash("question", self.question)

    @property
    def reference_hash(self) -> str:
        return text_hash("reference", self.question, self.reference)


def load_golden(settings: Settings, max_questions: int | None = None) -> list[GoldenQuestion]:
    """The golden questions in thread-id order (a stable subset when `max_questions` is set)."""
    path = settings.path("datasets") / "golden"
    if not path.exists():
        raise GoldenMissingError(
            f"no golden dataset at {path}; build it with `python -m training build` "
            "(after `python -m training ingest`)"
        )
    from datasets import load_from_disk

    rows = load_from_disk(str(path))
    missing = {"thread_id", "question", "reference_answer"} - set(rows.column_names)
    if missing:
        raise GoldenMissingError(f"golden dataset {path} lacks columns {sorted(missing)}; rebuild it")
    questions = sorted(
        (GoldenQuestion(str(r["thread_id"]), r["question"], r["reference_answer"], r.get("subreddit") or "",
                        r.get("permalink") or "") for r in rows if (r["question"] or "").strip()),
        key=lambda q: q.question_id,
    )
    if not questions:
        raise GoldenMissingError(f"golden dataset {path} has no questions")
    return questions[:max_questions] if max_questions else questions
