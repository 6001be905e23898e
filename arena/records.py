"""What the vote store holds and promises: its records, its errors and the `VoteStore` protocol.

The bottom of the store's dependency chain (records <- store_sql <- store_sqlite / store_postgres
<- store): everything above the store, and every backend, imports from here; this module imports
no backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

VOTE_CHOICES = ("model_a", "model_b", "tie", "both_bad")


class VoteRejected(ValueError):
    """A vote that cannot be recorded; `reason` is one of the class constants.
    RATE_LIMITED also carries `retry_after_s`, the seconds until the vote would be admitted."""

    UNKNOWN_BATTLE = "unknown_battle"
    UNFINISHED = "unfinished"
    ALREADY_VOTED = "already_voted"
    WRONG_SESSION = "wrong_session"
    INVALID_VOTE = "invalid_vote"
    RATE_LIMITED = "rate_limited"

    def __init__(self, reason: str, message: str, *, retry_after_s: float = 0.0):
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s


class BattleError(ValueError):
    """A battle cannot be created or finished as asked (unknown id, bad fields, finished twice)."""


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """At most `max_votes` votes in any sliding window of `window_s` seconds, per voter key."""

    max_votes: int
    window_s: float


@dataclasses.dataclass(frozen=True)
class StoredDocument:
    """A retrieved document exactly as a battle showed it to both models (the fields of
    raft.Document, which the store does not import: it keeps plain data)."""

    doc_id: str
    text: str
    title: str = ""
    subreddit: str = ""
    permalink: str = ""

    @classmethod
    def of(cls, document) -> "StoredDocument":
        """From a raft.Document (or anything with its attributes) or a dict with its keys."""
        get = document.get if isinstance(document, dict) else (lambda name, default="": getattr(document, name, default))
        return cls(
            doc_id=str(get("doc_id", "")),
            text=str(get("text", "")),
            title=str(get("title", "") or ""),
            subreddit=str(get("subreddit", "") or ""),
            permalink=str(get("permalink", "") or ""),
        )


@dataclasses.dataclass(frozen=True)
class BattleRecord:
    battle_id: str
    conversation_id: str  # shared by all turns of one multi-turn round
    turn: int  # 0 for the first question of a round
    session_hash: str
    question: str
    model_a: str  # the model shown as "Model A"
    model_b: str  # the model shown as "Model B"
    messages_a: list  # exactly what model A was sent (system prompt included when there was one)
    messages_b: list
    doc_ids: list  # retrieved documents both sides saw
    sampling: dict
    created_at: float  # unix seconds
    answer_a: str | None = None
    answer_b: str | None = None
    finished_at: float | None = None
    vote: str | None = None
    voted_at: float | None = None
    # The documents themselves (text as shown); empty for battles stored before schema 2,
    # which kept only their ids (their text is still inside messages_a/messages_b).
    documents: tuple[StoredDocument, ...] = ()
    client_hash: str | None = None  # salted hash of the client address that started the battle
    version_a: int | None = None  # adapter version of each side (None: base, unversioned, or before schema 4)
    version_b: int | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclasses.dataclass(frozen=True)
class VoteReceipt:
    """What `record_vote` returns; `duplicate` is True when the identical vote was already stored."""

    battle_id: str
    vote: str
    voted_at: float
    model_a: str
    model_b: str
    duplicate: bool


@dataclasses.dataclass(frozen=True)
class VoteRow:
    """One vote with what the leaderboard needs."""

    battle_id: str
    session_hash: str
    model_a: str
    model_b: str
    vote: str
    voted_at: float
    turn: int
    client_hash: str | None = None  # None: no address was given (scripts, votes before schema 2)
    version_a: int | None = None  # the battle's adapter versions (see BattleRecord)
    version_b: int | None = None

    @property
    def rated_a(self) -> str:
        """Side A as the leaderboard rates it when versions are kept apart: `rlhf@4`."""
        return _versioned(self.model_a, self.version_a)

    @property
    def rated_b(self) -> str:
        return _versioned(self.model_b, self.version_b)


def _versioned(model: str, version: int | None) -> str:
    # The same rule as modeling.adapters.versioned_name (the store imports no model code).
    return model if not version else f"{model}@{version}"


@dataclasses.dataclass(frozen=True)
class ChatFeedbackRow:
    """One 👍/👎 on a chat answer (a session's latest click on that answer)."""

    feedback_id: str
    session_hash: str
    model: str
    prompt: list  # the messages the model answered, system prompt left out
    completion: str  # the model's answer as shown, without our evidence/sources
    liked: bool
    created_at: float


class VoteStore(Protocol):
    def create_battle(
        self,
        *,
        session: str,
        question: str,
        model_a: str,
        model_b: str,
        messages_a: Sequence[dict],
        messages_b: Sequence[dict],
        doc_ids: Sequence[str] = (),
        documents: Sequence = (),
        sampling: dict | None = None,
        conversation_id: str | None = None,
        turn: int = 0,
        client: str | None = None,
        version_a: int | None = None,
        version_b: int | None = None,
    ) -> str: ...

    def finish_battle(self, battle_id: str, answer_a: str, answer_b: str) -> BattleRecord: ...

    def record_vote(
        self, battle_id: str, vote: str, session: str, *, client: str | None = None, limits: Sequence[RateLimit] = ()
    ) -> VoteReceipt: ...

    def battle(self, battle_id: str) -> BattleRecord | None: ...

    def conversation(self, conversation_id: str) -> list[BattleRecord]: ...

    def battles(self, *, voted_only: bool = False) -> list[BattleRecord]: ...

    def votes(self) -> list[VoteRow]: ...

    def record_chat_feedback(
        self, *, session: str, model: str, prompt: Sequence[dict], completion: str, liked: bool, message_index: int
    ) -> str: ...

    def chat_feedback(self) -> list["ChatFeedbackRow"]: ...

    def session_salt(self, env_var: str) -> str:
        """The salt for session and client hashes: the environment variable `env_var` when set,
        else one the store keeps (created once; every process on the same store gets the same one)."""
        ...

    def hash_session(self, session_id: str, env_var: str) -> str:
        """A session id as the store keeps it: salted HMAC with `session_salt(env_var)`."""
        ...

    def describe(self) -> str: ...

    def close(self) -> None: ...
