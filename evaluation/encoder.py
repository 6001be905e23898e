"""The sentence-transformers encoder the similarity metrics share: sentence and token embeddings.

One instance per model reference and process (loading MiniLM costs about a second; every metric
of a run reuses it). Calls take turns: fast tokenizers refuse concurrent use.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np

from settings import resolve_model_ref

_CACHE: dict[str, "TextEncoder"] = {}
_CACHE_LOCK = threading.Lock()


class TextEncoder:
    def __init__(self, model_ref: str, *, device: str | None = None, batch_size: int = 32):
        import torch
        from sentence_transformers import SentenceTransformer

        self.model_ref = model_ref
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self._model = SentenceTransformer(resolve_model_ref(model_ref), device=self.device)
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, model_ref: str) -> "TextEncoder":
        with _CACHE_LOCK:
            if model_ref not in _CACHE:
                _CACHE[model_ref] = cls(model_ref)
            return _CACHE[model_ref]

    @property
    def fingerprint(self) -> str:
        """Identifies the scores this encoder gives (the configured reference, not the local path)."""
        return hashlib.sha256(f"encoder|{self.model_ref}".encode()).hexdigest()[:12]

    def sentences(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length sentence embeddings, shape (len(texts), dim)."""
        if not texts:
            return np.zeros((0, self._model.get_embedding_dimension()), dtype=np.float32)
        with self._lock:
            return self._model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )

    def tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Unit-length contextual token embeddings per text, [CLS]/[SEP] removed (as BERTScore
        gives them no weight); an empty text gives an empty (0, dim) array."""
        with self._lock:
            outputs = self._model.encode(
                list(texts), batch_size=self.batch_size, output_value="token_embeddings",
                convert_to_numpy=False, show_progress_bar=False,
            )
        result = []
        for text, tensor in zip(texts, outputs):
            matrix = tensor.float().cpu().numpy()[1:-1] if text.strip() else np.zeros((0, tensor.shape[-1]))
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            result.append((matrix / np.maximum(norms, 1e-12)).astype(np.float32))
        return result
