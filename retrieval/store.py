"""The Chroma store: one client per process and path, one collection per embedder.

A collection is named `<retrieval.collection>-<embedder fingerprint>` and records the
embedder's identity in its metadata, so switching embedders builds a new collection next to the
old one instead of mixing vectors that cannot be compared.
"""

from __future__ import annotations

import threading
from pathlib import Path

from retrieval.embedder import EmbedderIdentity

BUILD_COMMAND = "python -m retrieval index"
COLLECTION_KIND = "wayfarer-thread-chunks"  # marks our collections among any others in the store

_CLIENTS: dict[str, object] = {}
_CLIENTS_LOCK = threading.Lock()


class IndexMissingError(RuntimeError):
    """There is no index for the configured embedder yet; the message says how to build it."""


class EmbedderMismatchError(RuntimeError):
    """A collection holds vectors of another embedder than its name says (edited by hand?)."""


def get_client(path: Path):
    """The process's Chroma client for `path` (Chroma allows one per path and process)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    key = str(Path(path).resolve())
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            Path(key).mkdir(parents=True, exist_ok=True)
            _CLIENTS[key] = chromadb.PersistentClient(
                path=key, settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False)
            )
        return _CLIENTS[key]


def collection_name(base: str, identity: EmbedderIdentity) -> str:
    return f"{base}-{identity.fingerprint}"


def _get(client, name: str):
    from chromadb.errors import NotFoundError

    try:
        return client.get_collection(name, embedding_function=None)
    except (NotFoundError, ValueError):
        return None


def check_identity(collection, identity: EmbedderIdentity) -> None:
    stored = EmbedderIdentity.from_metadata(collection.metadata)
    if stored != identity:
        found = stored.describe() if stored else "no embedder record"
        raise EmbedderMismatchError(
            f"collection {collection.name!r} was built with {found}, not {identity.describe()}; "
            f"rebuild it with `{BUILD_COMMAND} --rebuild`"
        )


def other_embedder_collections(client, base: str, identity: EmbedderIdentity) -> list[tuple[str, EmbedderIdentity]]:
    """Collections of the same base name filled by other embedders (name, their embedder)."""
    own = collection_name(base, identity)
    others = []
    for collection in client.list_collections():
        metadata = collection.metadata or {}
        if collection.name == own or metadata.get("kind") != COLLECTION_KIND or metadata.get("base") != base:
            continue
        stored = EmbedderIdentity.from_metadata(metadata)
        if stored is not None:
            others.append((collection.name, stored))
    return others


def open_for_search(index_path: Path, base: str, identity: EmbedderIdentity):
    """The collection to query, or IndexMissingError telling how to build it."""
    client = get_client(index_path)
    collection = _get(client, collection_name(base, identity))
    if collection is None or collection.count() == 0:
        others = other_embedder_collections(client, base, identity)
        why = "is empty" if collection is not None else "does not exist"
        detail = ""
        if others:
            detail = " (the store only has an index built with " + ", ".join(i.describe() for _, i in others) + ")"
        raise IndexMissingError(
            f"the retrieval index for embedder {identity.describe()} {why} in {index_path}{detail}; "
            f"build it with: {BUILD_COMMAND}"
        )
    check_identity(collection, identity)
    return collection


def open_for_build(index_path: Path, base: str, identity: EmbedderIdentity, *, rebuild: bool = False):
    """(collection, created) for writing; `rebuild` starts the embedder's collection afresh."""
    client = get_client(index_path)
    name = collection_name(base, identity)
    collection = _get(client, name)
    if collection is not None and rebuild:
        client.delete_collection(name)
        collection = None
    if collection is not None:
        check_identity(collection, identity)
        return collection, False
    collection = client.create_collection(
        name,
        configuration={"hnsw": {"space": "cosine"}},
        metadata={"kind": COLLECTION_KIND, "base": base, **identity.as_metadata()},
        embedding_function=None,  # we always pass our own vectors
    )
    return collection, True
