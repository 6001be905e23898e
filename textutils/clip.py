"""The one text clip: cleaning (titles, bodies), the datasets (questions, answers) and the judge's
prompts all shorten text the same way."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?](?=\s)")


def clip(text: str, max_chars: int, *, at_sentence: bool = False, marker: str = "…") -> str:
    """`text` (stripped) in at most `max_chars` characters. A longer text is cut, with
    `at_sentence`, after the last sentence that ends in the second half (no marker: nothing is
    cut mid-sentence); otherwise at the last space in the second half, or mid-word when there is
    none, and `marker` (counted in `max_chars`) shows the cut."""
    text = (text or "").strip()
    if len(text) <= max_chars:
        return text
    if at_sentence:
        ends = [m.end() for m in _SENTENCE_END.finditer(text[:max_chars]) if m.end() > max_chars // 2]
        if ends:
            return text[: ends[-1]].strip()
    cut = text[: max(max_chars - len(marker), 1)]
    space = cut.rfind(" ")
    if space >= max_chars // 2:
        cut = cut[:space]
    return cut.rstrip() + marker
