"""The Chroma store: one client per process and target, one collection per embedder.

The target is `retrieval.chroma`: a local folder (mode persistent, paths.index) or a Chroma
server (mode http, `chroma run`). `open_client(settings)` is the one place that picks; indexing,
search, the RAG chat and the arena all go through it, so they work unchanged against a server.

A collection is named `<retrieval.collection>-<embedder fingerprint>` and records the
embedder's identity in its metadata, so switching embedders builds a new collection next to the
old one instead of mixing vectors that cannot be compared.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from retrieval.config import HTTP, ChromaConfig, RetrievalConfig
from retrieval.embedder import EmbedderIdentity

BUILD_COMMAND = "python -m retrieval index"
COLLECTION_KIND = "wayfarer-thread-chunks"  # marks our collections among any others in the store
PROBE_TIMEOUT_S = 10.0  # a server that does not answer its heartbeat by then counts as unreachable

_CLIENTS: dict[str, object] = {}
_CLIENTS_LOCK = threading.Lock()


class IndexMissingError(RuntimeError):
    """There is no index for the configured embedder yet; the message says how to build it."""


class EmbedderMismatchError(RuntimeError):
    """A collection holds vectors of another embedder than its name says (edited by hand?)."""


class ChromaUnavailableError(RuntimeError):
    """The configured Chroma server cannot be reached or refuses us; the message names it and the keys."""


def get_client(path: Path):
    """The process's Chroma client for the local folder `path` (Chroma allows one per path and process)."""
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


def _where(config: ChromaConfig) -> str:
    return (
        f"{config.host}:{config.port} (retrieval.chroma.host / retrieval.chroma.port, "
        f"retrieval.chroma.mode: {HTTP})"
    )


def chroma_token(config: ChromaConfig) -> str | None:
    """The server token, from the environment variable the configuration names (never the file)."""
    if not config.auth_token_env:
        return None
    return os.environ.get(config.auth_token_env) or None


def auth_headers(config: ChromaConfig, token: str | None) -> dict[str, str]:
    """The HTTP headers that carry `token` the way the configured server expects it."""
    if token is None:
        return {}
    return {config.auth_header: f"Bearer {token}" if config.auth_header == "Authorization" else token}


def _probe(config: ChromaConfig, token: str | None) -> None:
    """Ask the server's heartbeat, with a timeout (chromadb's own requests have none)."""
    import httpx

    url = f"{config.url}/api/v2/heartbeat"
    try:
        response = httpx.get(url, headers=auth_headers(config, token), timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as err:
        raise ChromaUnavailableError(
            f"cannot reach the Chroma server at {_where(config)}: {type(err).__name__}: {err or 'no answer'}; "
            f"start it (e.g. `chroma run --path <folder> --host {config.host} --port {config.port}`) "
            "or set retrieval.chroma.mode: persistent to use the local folder paths.index"
        ) from None
    if response.status_code in (401, 403):
        source = f"the environment variable {config.auth_token_env}" if config.auth_token_env else "nowhere"
        state = "is set" if token else "is not set"
        raise ChromaUnavailableError(
            f"the Chroma server at {_where(config)} refused us (HTTP {response.status_code}): check the token, "
            f"read from {source} (retrieval.chroma.auth_token_env; it {state}) and retrieval.chroma.auth_header"
        )
    if response.status_code != 200:
        raise ChromaUnavailableError(
            f"{config.url} answered HTTP {response.status_code} to a Chroma heartbeat: is {_where(config)} "
            "a Chroma server?"
        )


def _http_client(config: ChromaConfig):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    token = chroma_token(config)
    _probe(config, token)
    options = {"anonymized_telemetry": False, "allow_reset": False}
    if token is not None:
        options.update(
            chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
            chroma_client_auth_credentials=token,
            chroma_auth_token_transport_header=config.auth_header,
        )
    try:
        return chromadb.HttpClient(
            host=config.host, port=config.port, ssl=config.ssl, settings=ChromaSettings(**options),
            tenant=config.tenant, database=config.database,
        )
    except Exception as err:  # connection, auth, unknown tenant or database: one clear line
        message = str(err).replace(token, "***") if token else str(err)
        raise ChromaUnavailableError(
            f"cannot use the Chroma server at {_where(config)}, tenant {config.tenant!r}, database "
            f"{config.database!r}: {type(err).__name__}: {message}"
        ) from None


def open_client(settings):
    """The process's Chroma client for the configured target (retrieval.chroma): a
    PersistentClient on paths.index, or an HttpClient to a Chroma server. Cached per target;
    ChromaUnavailableError when the server cannot be reached."""
    config = RetrievalConfig.from_settings(settings).chroma
    if config.mode != HTTP:
        return get_client(settings.path("index"))
    key = f"{config.url}|{config.tenant}|{config.database}|{config.auth_token_env}|{config.auth_header}"
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = _http_client(config)
        return _CLIENTS[key]


def describe_store(settings) -> str:
    """Where the index lives, for messages: the folder or the server."""
    config = RetrievalConfig.from_settings(settings).chroma
    if config.mode == HTTP:
        return f"the Chroma server at {config.url}"
    return str(settings.path("index"))


def store_exists(settings) -> bool:
    """Cheap check whether there can be an index at all: the folder exists (persistent), or True
    for a server (whether it answers and holds the collection is found out when it is opened)."""
    if RetrievalConfig.from_settings(settings).chroma.mode == HTTP:
        return True
    return settings.path("index").is_dir()


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


def open_for_search(settings, base: str, identity: EmbedderIdentity):
    """The collection to query, or IndexMissingError telling how to build it."""
    client = open_client(settings)
    collection = _get(client, collection_name(base, identity))
    if collection is None or collection.count() == 0:
        others = other_embedder_collections(client, base, identity)
        why = "is empty" if collection is not None else "does not exist"
        detail = ""
        if others:
            detail = " (the store only has an index built with " + ", ".join(i.describe() for _, i in others) + ")"
        raise IndexMissingError(
            f"the retrieval index for embedder {identity.describe()} {why} in {describe_store(settings)}{detail}; "
            f"build it with: {BUILD_COMMAND}"
        )
    check_identity(collection, identity)
    return collection


def open_for_build(settings, base: str, identity: EmbedderIdentity, *, rebuild: bool = False):
    """(collection, created) for writing; `rebuild` starts the embedder's collection afresh."""
    client = open_client(settings)
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
