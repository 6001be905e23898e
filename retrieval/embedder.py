"""The sentence-transformers embedder and its identity (which model, how many dimensions).

Vectors from two embedders are not comparable, so every collection is named after, and
records, the identity of the embedder that filled it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Sequence

from settings import Settings, resolve_model_ref


_CACHE: dict[str, "Embedder"] = {}
_CACHE_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class EmbedderIdentity:
    model: str  # the configured reference (stable across machines, unlike the resolved path)
    dimension: int

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.model}|{self.dimension}".encode()).hexdigest()[:10]

    def as_metadata(self) -> dict:
        return {"embedder_model": self.model, "embedder_dimension": self.dimension, "embedder_fingerprint": self.fingerprint}

    @classmethod
    def from_metadata(cls, metadata: dict | None) -> "EmbedderIdentity | None":
        metadata = metadata or {}
        if "embedder_model" not in metadata or "embedder_dimension" not in metadata:
            return None
        return cls(str(metadata["embedder_model"]), int(metadata["embedder_dimension"]))

    def describe(self) -> str:
        return f"{self.model} ({self.dimension} dims)"


class Embedder:
    """Unit-length embeddings (so cosine distance is what Chroma's index measures)."""

    def __init__(self, model_ref: str, *, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self._model = SentenceTransformer(resolve_model_ref(model_ref), device=device)
        dimension = self._model.get_embedding_dimension()
        self.identity = EmbedderIdentity(model_ref, int(dimension))
        # Fast tokenizers refuse concurrent use ("Already borrowed"); chat requests arrive on
        # several threads, so calls take turns.
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> "Embedder":
        """The configured embedder, loaded once per process (indexing and search share it)."""
        ref = settings.config.embedder.model
        with _CACHE_LOCK:
            if ref not in _CACHE:
                _CACHE[ref] = cls(ref)
            return _CACHE[ref]

    @property
    def tokenizer(self):
        """The embedder's own tokenizer (chunks are counted in its tokens)."""
        return self._model.tokenizer

    @property
    def max_seq_length(self) -> int:
        """Tokens the embedder reads (special tokens included); the rest of a text is ignored."""
        return int(self._model.max_seq_length)

    def embed(self, texts: Sequence[str], batch_size: int = 32):
        """A float32 numpy array, one unit vector per text."""
        with self._lock:
            return self._model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
