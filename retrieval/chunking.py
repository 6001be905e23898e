"""Splitting thread text into overlapping chunks counted in the embedder's tokens (no heavy
imports: training uses it too).

Why tokens, not characters: the embedder reads at most `max_seq_length` tokens (MiniLM: 256)
and silently ignores the rest, so a chunk longer than that is indexed by its head only; and
RAFT prompts are sized in tokens. The chunk length is therefore `retrieval.chunk_tokens`,
capped by the embedder's own limit (minus its special tokens), read from the embedder itself.

RAFT's oracle and distractor documents are cut by this same chunker (through corpus.chunk_thread)
as the indexed ones, so the adapter trains on documents that look like what retrieval returns.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

# Preferred cut points, best first: a paragraph break, a sentence end, any whitespace.
_CUT_PATTERNS = (re.compile(r"\n\n"), re.compile(r"(?<=[.!?])\s+"), re.compile(r"\s"))


@dataclasses.dataclass(frozen=True)
class TokenChunker:
    """Cuts text into chunks of at most `max_tokens` tokens of `tokenizer` (a fast Hugging Face
    tokenizer), each starting about `overlap_tokens` before the previous one ended."""

    tokenizer: Any
    max_tokens: int
    overlap_tokens: int

    def __post_init__(self) -> None:
        if self.max_tokens < 8 or not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise ValueError("need max_tokens >= 8 and 0 <= overlap_tokens < max_tokens / 2")

    @classmethod
    def for_embedder(cls, tokenizer, max_seq_length: int, chunk_tokens: int, overlap_tokens: int) -> "TokenChunker":
        """`chunk_tokens`, capped so that a chunk plus the embedder's special tokens ([CLS],
        [SEP]) fits in its `max_seq_length`."""
        limit = int(max_seq_length) - tokenizer.num_special_tokens_to_add(pair=False)
        return cls(tokenizer, min(int(chunk_tokens), limit), int(overlap_tokens))

    def count(self, text: str) -> int:
        """Tokens of `text` without special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def chunk(self, text: str) -> list[str]:
        text = text.strip()
        if not text:
            return []
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                                 verbose=False)["offset_mapping"]
        if len(offsets) <= self.max_tokens:
            return [text]
        chunks: list[str] = []
        first = 0  # index of the chunk's first token
        while first < len(offsets):
            start = offsets[first][0]
            last = first + self.max_tokens  # one past the last token that may be in the chunk
            if last >= len(offsets):
                chunks.append(text[start:].strip())
                break
            end = offsets[last - 1][1]
            # Cut at the best boundary in the second half of the window.
            half = offsets[first + self.max_tokens // 2][0]
            window = text[half:end]
            for pattern in _CUT_PATTERNS:
                cuts = [m.start() for m in pattern.finditer(window)]
                if cuts:
                    end = half + cuts[-1]
                    break
            piece = text[start:end].strip()
            # A cut inside a word may tokenize into more pieces than the offsets said: shorten.
            while self.count(piece) > self.max_tokens:
                end = max(start + 1, end - max(1, (end - start) // 20))
                piece = text[start:end].strip()
            chunks.append(piece)
            next_first = next((i for i in range(first, len(offsets)) if offsets[i][0] >= end), len(offsets))
            if next_first >= len(offsets):
                break
            # Begin the overlap on a word boundary so no chunk starts mid-word.
            candidate = max(next_first - self.overlap_tokens, first + 1)
            while candidate < next_first and not text[offsets[candidate][0] - 1].isspace():
                candidate += 1
            first = candidate
        return [c for c in chunks if c]


def chunker_from_settings(settings) -> TokenChunker:
    """The configured chunker: `retrieval.chunk_tokens` of the configured embedder's tokenizer,
    capped by that embedder's `max_seq_length` (loads the embedder, cached per process)."""
    from retrieval.config import RetrievalConfig
    from retrieval.embedder import Embedder

    config = RetrievalConfig.from_settings(settings)
    embedder = Embedder.from_settings(settings)
    return TokenChunker.for_embedder(embedder.tokenizer, embedder.max_seq_length,
                                     config.chunk_tokens, config.chunk_overlap_tokens)
