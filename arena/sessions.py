"""Who is voting, without knowing who: salted hashes of sessions and client addresses, abuse flags.

The Chatbot Arena logs raw IP addresses. We never store one: a voter is known by two keyed
hashes (HMAC-SHA256 with a secret salt the vote store keeps): one of Gradio's per-page session
id, and one of the client's network address. The session id is chosen by the client (a script
gets a fresh one per connection), so rate limits count by both; the address costs an attacker
far more to change. IPv6 addresses count by their /64 network, the block one subscriber is
normally given (hashing each address would let one host vote from 2^64 addresses). Without the
salt, stored hashes cannot be linked back to a session or an address by dictionary attack.

Abuse flags: a session or client address with at least `votes` votes inside some window of
`minutes` minutes is flagged; the rate limits (arena.config) are checked to let such a voter
through, so the flag can actually trigger (arena.config refuses thresholds it could not).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

SESSION_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


def session_salt_from_env(env_var: str) -> str | None:
    """The salt set in the environment variable `env_var`, or None when it is unset or blank.
    Every vote store backend gives this precedence over the salt it keeps itself."""
    return os.environ.get(env_var, "").strip() or None


def load_session_salt(env_var: str, salt_file: Path | None) -> str:
    """The salt from `env_var`, else from `salt_file` (created once, private to the owner)."""
    from_env = session_salt_from_env(env_var)
    if from_env:
        return from_env
    if salt_file is None:
        raise RuntimeError(f"no session salt: set {env_var} (this vote store has no folder to keep one in)")
    salt_file = Path(salt_file)
    salt_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once agree on the first salt written.
        fd = os.open(salt_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the creator may not have written it yet
            salt = salt_file.read_text().strip()
            if salt:
                return salt
            time.sleep(0.02)
        raise RuntimeError(f"session salt file {salt_file} is empty; delete it to create a new one")
    with os.fdopen(fd, "w") as handle:
        salt = secrets.token_hex(32)
        handle.write(salt)
    return salt


def _keyed_hash(salt: str, kind: str, value: str) -> str:
    # HMAC, not sha256(salt + value): no length-extension, and `kind` keeps a session id and an
    # address that happen to be equal strings from hashing to the same key.
    return hmac.new(salt.encode(), f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()


def hash_session(salt: str, session_id: str) -> str:
    """The stored identity of a session: HMAC-SHA256 of the session id under the salt (64 hex)."""
    if not session_id:
        raise ValueError("empty session id")
    return _keyed_hash(salt, "session", session_id)


def client_network(address: str) -> str:
    """What one client is counted as: an IPv4 address itself, an IPv6 address by its /64
    network (an IPv4-mapped IPv6 address as the IPv4 address). A value that is not an IP
    address (a test client's host name) is kept as it is."""
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def hash_client(salt: str, address: str) -> str:
    """The stored identity of a client address (see `client_network`): HMAC-SHA256 under the salt."""
    if not address or not address.strip():
        raise ValueError("empty client address")
    return _keyed_hash(salt, "client", client_network(address))


def check_session_hash(value: str) -> str:
    if not isinstance(value, str) or not SESSION_HASH_RE.match(value):
        raise ValueError(
            "session and client must be salted HMAC-SHA256 hex digests (arena.sessions.hash_session / "
            "hash_client), never a raw id or address"
        )
    return value


def flagged_sessions(sessions: Iterable[str], voted_at: Iterable[float], votes: int, minutes: float) -> set[str]:
    """Keys (sessions or client hashes) with at least `votes` votes inside some window of `minutes`.

    Vectorised: after sorting by (key, time), a key is flagged when the vote `votes - 1`
    places later in its own sequence is less than the window away.
    """
    index: dict[str, int] = {}
    codes = np.array([index.setdefault(s, len(index)) for s in sessions], dtype=np.int64)
    times = np.asarray(list(voted_at), dtype=float)
    if len(codes) < votes or len(codes) == 0:
        return set()
    names = np.array(list(index), dtype=object)
    order = np.lexsort((times, codes))
    codes, times = codes[order], times[order]
    span = votes - 1
    if span == 0:
        return set(index)
    same_session = codes[span:] == codes[:-span]
    fast = (times[span:] - times[:-span]) <= minutes * 60.0
    return set(names[np.unique(codes[:-span][same_session & fast])].tolist())


@dataclasses.dataclass(frozen=True)
class AbuseFlags:
    """Flagged sessions and client addresses (their hashes), and the votes they cast."""

    sessions: frozenset
    clients: frozenset
    battle_ids: frozenset  # every vote of a flagged session or from a flagged client address

    @property
    def voters(self) -> int:
        return len(self.sessions) + len(self.clients)


def abuse_flags(votes: Sequence, abuse_votes: int, abuse_minutes: float) -> AbuseFlags:
    """Flags for stored votes (arena.records.VoteRow: battle_id, session_hash, client_hash, voted_at)."""
    sessions = flagged_sessions((v.session_hash for v in votes), (v.voted_at for v in votes), abuse_votes, abuse_minutes)
    with_client = [v for v in votes if v.client_hash]
    clients = flagged_sessions(
        (v.client_hash for v in with_client), (v.voted_at for v in with_client), abuse_votes, abuse_minutes
    )
    flagged = frozenset(v.battle_id for v in votes if v.session_hash in sessions or v.client_hash in clients)
    return AbuseFlags(frozenset(sessions), frozenset(clients), flagged)
