"""The `retrieval` section of wayfarer.yaml as a dataclass (light import)."""

from __future__ import annotations

import dataclasses
import re

from settings import ConfigError, Settings, build_dataclass

# Chroma's rule for collection names; we append "-<fingerprint>" to the configured one.
_COLLECTION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,480}[A-Za-z0-9]$")

PERSISTENT, HTTP = "persistent", "http"
# Headers chromadb's token auth provider can send: "Authorization: Bearer <token>" or "X-Chroma-Token: <token>".
AUTH_HEADERS = ("Authorization", "X-Chroma-Token")


@dataclasses.dataclass(frozen=True)
class ChromaConfig:
    """`retrieval.chroma`: where the Chroma store lives.

    persistent: a local folder (paths.index) opened in this process. http: a Chroma server
    (`chroma run`) reached with chromadb.HttpClient; its token, if any, is read from the
    environment variable named by auth_token_env, never from the file.
    """

    mode: str
    host: str
    port: int
    ssl: bool
    auth_token_env: str | None
    auth_header: str
    tenant: str
    database: str

    def __post_init__(self) -> None:
        if self.mode not in (PERSISTENT, HTTP):
            raise ConfigError(f"retrieval.chroma.mode {self.mode!r}: use {PERSISTENT!r} or {HTTP!r}")
        if not str(self.host or "").strip() or "://" in str(self.host):
            raise ConfigError(f"retrieval.chroma.host {self.host!r}: a host name or address, without a scheme")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ConfigError(f"retrieval.chroma.port {self.port!r}: a TCP port number")
        if not isinstance(self.ssl, bool):
            raise ConfigError(f"retrieval.chroma.ssl {self.ssl!r}: true or false")
        if self.auth_header not in AUTH_HEADERS:
            raise ConfigError(f"retrieval.chroma.auth_header {self.auth_header!r}: one of {', '.join(AUTH_HEADERS)}")

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    collection: str
    chunk_tokens: int  # capped by the embedder's max_seq_length (retrieval/chunking.py)
    chunk_overlap_tokens: int
    max_comments: int
    top_k: int
    min_similarity: float
    embed_batch_size: int
    write_batch_size: int
    followup_max_words: int
    chroma: ChromaConfig

    def __post_init__(self) -> None:
        if not _COLLECTION_NAME_RE.match(self.collection):
            raise ConfigError(
                f"retrieval.collection {self.collection!r}: use 3+ letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit"
            )
        if self.chunk_tokens < 8 or not 0 <= self.chunk_overlap_tokens < self.chunk_tokens // 2:
            raise ConfigError("retrieval: need chunk_tokens >= 8 and 0 <= chunk_overlap_tokens < chunk_tokens / 2")
        for name in ("top_k", "embed_batch_size", "write_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"retrieval.{name} must be at least 1")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ConfigError("retrieval.min_similarity is a cosine similarity: between -1 and 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> "RetrievalConfig":
        section = settings.section("retrieval")
        return build_dataclass(cls, {**section, "chroma": build_dataclass(ChromaConfig, section["chroma"])})
