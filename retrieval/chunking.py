"""Splitting thread text into overlapping chunks (no heavy imports: training uses it too).

RAFT's oracle and distractor documents are chunks cut exactly like the indexed ones, so the
adapter trains on documents that look like what retrieval returns at answer time.
"""

from __future__ import annotations

import re



def chunk_text(text: str, chunk_chars: int = 1000, overlap_chars: int = 200) -> list[str]:
    """Chunks of at most `chunk_chars` characters, each starting `overlap_chars` before the
    previous one ended; cuts prefer paragraph, then sentence, then word boundaries."""
    if chunk_chars <= 0 or not 0 <= overlap_chars < chunk_chars:
        raise ValueError("need chunk_chars > 0 and 0 <= overlap_chars < chunk_chars")
    text = text.strip()
    if len(text) <= chunk_chars:
        return [text] if text else []
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + chunk_chars, len(text))
        if end < len(text):
            window = text[start:end]
            cut = None
            for pattern in (r"\n\n", r"(?<=[.!?])\s+", r"\s"):
                matches = [m.start() for m in re.finditer(pattern, window) if m.start() > chunk_chars // 2]
                if matches:
                    cut = matches[-1]
                    break
            if cut is not None:
                end = start + cut
        chunks.append(text[start:end].strip())
        if end >= len(text):
            break
        next_start = max(end - overlap_chars, start + 1)
        # Begin the overlap on a word boundary so no chunk starts mid-word.
        space = text.find(" ", next_start, end)
        start = space + 1 if space != -1 else next_start
    return [c for c in chunks if c]
