"""Who is voting, without knowing who: salted session hashes, a vote rate limit, abuse flags.

The Chatbot Arena logs raw IP addresses. We never see or store one: the identity of a voter is
the hash of Gradio's per-page session id with a secret salt, so stored hashes cannot be linked
back to a browser session by anyone without the salt, nor to a person at all.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable
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


def hash_session(salt: str, session_id: str) -> str:
    """The stored identity of a session: sha256 of salt and the session id (64 hex chars)."""
    if not session_id:
        raise ValueError("empty session id")
    return hashlib.sha256(f"{salt}\x00{session_id}".encode()).hexdigest()


def check_session_hash(value: str) -> str:
    if not isinstance(value, str) or not SESSION_HASH_RE.match(value):
        raise ValueError(
            "session must be a salted sha256 hex digest (arena.sessions.hash_session), never a raw id or address"
        )
    return value


class RateLimiter:
    """At most `limit` events per session in any sliding `window_s` seconds (in memory)."""

    def __init__(self, limit: int, window_s: float = 60.0, clock=time.monotonic):
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._events: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def allow(self, session: str) -> bool:
        """Count one event for `session` if it is under the limit; False (not counted) otherwise."""
        now = self._clock()
        with self._lock:
            events = self._events[session]
            while events and now - events[0] >= self.window_s:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True

    def retry_after(self, session: str) -> float:
        with self._lock:
            events = self._events.get(session)
            if not events or len(events) < self.limit:
                return 0.0
            return max(0.0, self.window_s - (self._clock() - events[0]))


def flagged_sessions(sessions: Iterable[str], voted_at: Iterable[float], votes: int, minutes: float) -> set[str]:
    """Sessions with at least `votes` votes inside some window of `minutes` minutes.

    Vectorised: after sorting by (session, time), a session is flagged when the vote `votes - 1`
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
