"""SFT rows: the question and the best reply (plus the second when it adds something)."""

from __future__ import annotations

from collections.abc import Sequence

from textutils import clip
from training.datasets.config import DatasetsConfig
from training.datasets.schema import chat
from training.datasets.threads import Thread, words


def sft_answer(answers: Sequence[dict], config: DatasetsConfig) -> str:
    best = answers[0]["body"].strip()
    ratio = config.sft_second_comment_score_ratio
    if ratio is not None and len(answers) > 1 and answers[0]["score"] > 0:
        second = answers[1]["body"].strip()
        words_best, words_second = words(best), words(second)
        overlap = len(words_best & words_second) / max(len(words_best | words_second), 1)
        # "Adds": well rated too, mostly new words, and the two still fit under the length cap.
        if (answers[1]["score"] >= ratio * answers[0]["score"] and overlap < 0.5
                and len(best) + len(second) + 2 <= config.answer_max_chars):
            return f"{best}\n\n{second}"
    return clip(best, config.answer_max_chars, at_sentence=True)


def sft_row(thread: Thread, question: str, answers: Sequence[dict], config: DatasetsConfig) -> dict:
    return {"messages": chat(question, sft_answer(answers, config)), "thread_id": thread.thread_id}
