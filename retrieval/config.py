"""The `retrieval` section of wayfarer.yaml as a dataclass (light import)."""

from __future__ import annotations

import dataclasses
import re

from settings import ConfigError, Settings, build_dataclass

# Chroma's rule for collection names; we append "-<fingerprint>" to the configured one.
_COLLECTION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,480}[A-Za-z0-9]$")


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    collection: str = "wayfarer-threads"
    chunk_chars: int = 1000
    chunk_overlap: int = 200
    max_comments: int = 3
    top_k: int = 4
    min_similarity: float = 0.2
    embed_batch_size: int = 32
    write_batch_size: int = 512
    followup_max_words: int = 6

    def __post_init__(self) -> None:
        if not _COLLECTION_NAME_RE.match(self.collection):
            raise ConfigError(
                f"retrieval.collection {self.collection!r}: use 3+ letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit"
            )
        if self.chunk_chars <= 0 or not 0 <= self.chunk_overlap < self.chunk_chars:
            raise ConfigError("retrieval: need chunk_chars > 0 and 0 <= chunk_overlap < chunk_chars")
        for name in ("top_k", "embed_batch_size", "write_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"retrieval.{name} must be at least 1")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ConfigError("retrieval.min_similarity is a cosine similarity: between -1 and 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> "RetrievalConfig":
        return build_dataclass(cls, settings.section("retrieval"))
