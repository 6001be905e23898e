"""Turn raw Reddit records (dump lines or API conversions) into clean travel threads.

Everything here is pure: no I/O, no global state. `ThreadBuilder` takes raw submission and
comment dicts one at a time (so a 30 GB dump streams through it) and `finish()` returns the
threads plus the count of every record by what happened to it.

Decisions worth knowing:
- Every record seen ends in exactly one bucket: kept, or dropped for one named reason. So
  `submissions == threads_kept + sum(dropped_submissions)` and likewise for comments.
- Missing values: a record without an id, title (submissions), body/link_id (comments) or
  subreddit is skipped as `missing_fields`. A missing or unreadable score, num_comments or
  created_utc is stored as 0, but an unknown score is never judged by the score thresholds:
  only a score that is there and low drops an item. A missing parent_id makes a comment
  top-level.
- A post whose author deleted the account but whose text survives is kept: the text is what we
  use, never the author. Text that reads "[deleted]"/"[removed]" is dropped.
- Struck-through markdown (~~old price~~) is removed, not unwrapped: the author retracted it.
- Personal data is scrubbed from all text: u/name mentions, e-mail addresses and phone numbers.
  Phone detection is deliberately conservative so prices, dates, times, years, number ranges
  and flight numbers survive: a number needs a + or 00 prefix, or 9 to 12 digits split into
  groups that do not read as a year list, a date or a thousands-separated amount.
- Deduplication: the same id keeps the copy with the higher score; different ids with the same
  normalised title + body keep the higher score (then the older post, then the smaller id).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from training.text_cleaning import clean_text, clean_title, content_key

REDDIT = "https://www.reddit.com"
DELETED_TEXTS = {"[deleted]", "[removed]", "[removedbyreddit]", "[deletedbyuser]", "[removedbymoderator]"}
# Below this many normalised characters, equal title+body is likely a coincidence ("Help" with an
# image), not a repost, so content deduplication leaves such posts alone.
_MIN_DEDUP_KEY_CHARS = 20


@dataclasses.dataclass(frozen=True)
class CleaningConfig:
    """`data.cleaning` in wayfarer.yaml (the `api` sub-section belongs to training/reddit_api)."""

    min_post_score: int
    min_comment_score: int
    min_comments: int  # threads with fewer kept comments are dropped (nothing to learn from)
    max_comments_per_thread: int
    min_comment_chars: int  # "this", "+1", "thanks!" carry no travel advice
    max_title_chars: int
    max_body_chars: int
    max_comment_chars: int
    drop_nsfw: bool
    drop_stickied_comments: bool  # moderator notices pinned under posts
    bot_authors: Sequence[str]
    bot_author_pattern: str
    bot_body_markers: Sequence[str]

    def __post_init__(self):
        object.__setattr__(self, "bot_authors", tuple(self.bot_authors))
        object.__setattr__(self, "bot_body_markers", tuple(m.lower() for m in self.bot_body_markers))
        re.compile(self.bot_author_pattern)  # fail at load time, not mid-run
        if self.max_comments_per_thread < 1 or self.min_comments < 0:
            raise ValueError("max_comments_per_thread must be >= 1 and min_comments >= 0")


def cleaning_config_from_settings(settings) -> CleaningConfig:
    from settings import build_dataclass

    section = settings.section("data")["cleaning"]
    section.pop("api")
    return build_dataclass(CleaningConfig, section)


# --------------------------------------------------------------------------------------------
# Values


def coerce_int(value: Any, default: int | None = 0) -> int | None:
    """12, "12", " 12.0 ", 12.7 -> int; None, "", "abc", NaN, booleans -> default."""
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = value.strip().replace(",", "")
        if not value:
            return default
        try:
            return int(value)
        except ValueError:
            pass
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return int(number) if math.isfinite(number) else default


def coerce_bool(value: Any) -> bool:
    """True, "true", "1", 1 -> True; False, "false", "0", None, "" -> False."""
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes", "t", "y"}
    return bool(value)


def reddit_id(value: Any) -> str:
    """Base36 id without its kind prefix: "t3_abc" -> "abc"; "" when not an id."""
    if value is None or isinstance(value, bool):
        return ""
    text = str(value).strip().lower()
    text = re.sub(r"^t[1-6]_", "", text)
    return text if re.fullmatch(r"[0-9a-z]+", text) else ""


def subreddit_lookup(subreddits: Iterable[str]) -> dict[str, str]:
    """Lower-case name -> canonical spelling from the configuration."""
    return {name.lower(): name for name in subreddits}


def canonical_subreddit(value: Any, lookup: Mapping[str, str]) -> str | None:
    """The configured spelling of a travel subreddit, or None when it is not one of ours."""
    if not isinstance(value, str):
        return None
    name = re.sub(r"^/?r/", "", value.strip(), flags=re.I).strip("/").lower()
    return lookup.get(name)


def is_deleted_text(text: Any) -> bool:
    return isinstance(text, str) and re.sub(r"\s+", "", text).lower() in DELETED_TEXTS


def slugify(title: str, max_chars: int = 50) -> str:
    """Reddit-style permalink slug: lower case words joined by underscores."""
    slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")
    if len(slug) > max_chars:
        slug = slug[:max_chars].rsplit("_", 1)[0] or slug[:max_chars]
    return slug or "post"


def full_permalink(permalink: Any, subreddit: str, thread_id: str, title: str) -> str:
    """https://www.reddit.com/r/<sub>/comments/<id>/<slug>/ (sub in configured spelling).

    The slug of the given permalink is kept when it belongs to this id; otherwise (missing, a
    link to another post, garbage) it is rebuilt from the title.
    """
    slug = ""
    if isinstance(permalink, str):
        match = re.search(r"/comments/([0-9a-z]+)(?:/([^/?#\s]*))?", permalink, flags=re.I)
        if match and match.group(1).lower() == thread_id and match.group(2):
            slug = match.group(2)
    return f"{REDDIT}/r/{subreddit}/comments/{thread_id}/{slug or slugify(title)}/"


# --------------------------------------------------------------------------------------------
# Records


def classify_record(record: Mapping[str, Any], hint: str | None = None) -> str | None:
    """'submission', 'comment' or None, told by the fields; the file name is only a tie-breaker."""
    if "link_id" in record or ("body" in record and "parent_id" in record):
        return "comment"
    if "title" in record or "selftext" in record or "num_comments" in record or "is_self" in record:
        return "submission"
    if "body" in record:
        return "comment"
    return hint if hint in {"submission", "comment"} else None


def _known_score(record: Mapping[str, Any]) -> float:
    """The record's score, or +inf when it is missing or unreadable (thresholds then pass)."""
    score = coerce_int(record.get("score"), default=None)
    return math.inf if score is None else score


@dataclasses.dataclass
class _Post:
    thread_id: str
    subreddit: str
    title: str
    body: str
    permalink: str
    score: int
    num_comments: int | None
    created_utc: int


@dataclasses.dataclass
class _Reply:
    comment_id: str
    body: str
    score: int
    created_utc: int


@dataclasses.dataclass
class CleaningStats:
    submissions: int = 0
    comments: int = 0
    unrecognised_records: int = 0
    dropped_submissions: Counter = dataclasses.field(default_factory=Counter)
    dropped_comments: Counter = dataclasses.field(default_factory=Counter)
    threads_kept: int = 0
    comments_kept: int = 0
    threads_per_subreddit: Counter = dataclasses.field(default_factory=Counter)

    @property
    def duplicates(self) -> dict[str, int]:
        return {
            "submissions": self.dropped_submissions["duplicate_id"] + self.dropped_submissions["duplicate_content"],
            "comments": self.dropped_comments["duplicate_id"] + self.dropped_comments["duplicate_body"],
        }

    @property
    def orphans(self) -> int:
        return self.dropped_comments["orphan"] + self.dropped_comments["missing_parent"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "submissions": self.submissions,
            "comments": self.comments,
            "unrecognised_records": self.unrecognised_records,
            "dropped_submissions": {k: v for k, v in sorted(self.dropped_submissions.items()) if v},
            "dropped_comments": {k: v for k, v in sorted(self.dropped_comments.items()) if v},
            "duplicates": self.duplicates,
            "orphans": self.orphans,
            "threads_kept": self.threads_kept,
            "comments_kept": self.comments_kept,
            "threads_per_subreddit": dict(sorted(self.threads_per_subreddit.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


class ThreadBuilder:
    """Feed raw records with `add`, then `finish()` for the threads (sorted by thread_id)."""

    def __init__(self, config: CleaningConfig, subreddits: Iterable[str]):
        self.config = config
        self.stats = CleaningStats()
        self._lookup = subreddit_lookup(subreddits)
        if not self._lookup:
            raise ValueError("data.subreddits is empty: no subreddit would be kept")
        self._bot_re = re.compile(config.bot_author_pattern)
        self._bots = {name.lower() for name in config.bot_authors}
        self._posts: dict[str, _Post] = {}
        self._dropped_post_ids: set[str] = set()
        # Thread structure from every comment seen (kept or not), so depth survives a deleted parent.
        self._parents: dict[str, dict[str, str]] = defaultdict(dict)
        self._replies: dict[str, dict[str, _Reply]] = defaultdict(dict)

    # -- intake ------------------------------------------------------------------------------

    def add(self, record: Mapping[str, Any], hint: str | None = None) -> None:
        kind = classify_record(record, hint)
        if kind == "submission":
            self.stats.submissions += 1
            self._add_submission(record)
        elif kind == "comment":
            self.stats.comments += 1
            self._add_comment(record)
        else:
            self.stats.unrecognised_records += 1

    def _is_bot(self, author: Any, text: str) -> bool:
        name = author if isinstance(author, str) else ""
        if name.lower() in self._bots or (name and name not in {"[deleted]", "[removed]"} and self._bot_re.search(name)):
            return True
        lowered = text.lower()
        return any(marker in lowered for marker in self.config.bot_body_markers)

    def _add_submission(self, record: Mapping[str, Any]) -> None:
        drop = self.stats.dropped_submissions
        thread_id = reddit_id(record.get("id") or record.get("name"))
        raw_title = record.get("title")
        if not thread_id or not isinstance(raw_title, str) or not raw_title.strip() or not record.get("subreddit"):
            drop["missing_fields"] += 1
            return
        subreddit = canonical_subreddit(record.get("subreddit"), self._lookup)
        if subreddit is None:
            drop["other_subreddit"] += 1
            return
        reason = self._submission_problem(record)
        if reason is None:
            title = clean_title(raw_title, self.config.max_title_chars)
            body = clean_text(record.get("selftext"), self.config.max_body_chars)
            if not title:
                reason = "missing_fields"
        if reason is not None:
            drop[reason] += 1
            self._dropped_post_ids.add(thread_id)
            return
        post = _Post(
            thread_id=thread_id,
            subreddit=subreddit,
            title=title,
            body=body,
            permalink=full_permalink(record.get("permalink"), subreddit, thread_id, title),
            score=coerce_int(record.get("score")),
            num_comments=coerce_int(record["num_comments"]) if record.get("num_comments") is not None else None,
            created_utc=coerce_int(record.get("created_utc")),
        )
        previous = self._posts.get(thread_id)
        if previous is not None:
            drop["duplicate_id"] += 1
            if previous.score >= post.score:
                return
        self._posts[thread_id] = post

    def _submission_problem(self, record: Mapping[str, Any]) -> str | None:
        removed_by = record.get("removed_by_category")
        if is_deleted_text(record.get("title")) or removed_by in {"deleted", "author"}:
            return "deleted"
        selftext = record.get("selftext")
        if is_deleted_text(selftext):
            return "deleted" if re.sub(r"\s+", "", selftext).lower() == "[deleted]" else "removed"
        if removed_by or coerce_bool(record.get("removed")) or coerce_bool(record.get("spam")):
            return "removed"
        if self.config.drop_nsfw and coerce_bool(record.get("over_18")):
            return "nsfw"
        if self._is_bot(record.get("author"), ""):
            return "bot"
        if _known_score(record) < self.config.min_post_score:
            return "low_score"
        return None

    def _add_comment(self, record: Mapping[str, Any]) -> None:
        drop = self.stats.dropped_comments
        comment_id = reddit_id(record.get("id") or record.get("name"))
        link_id = reddit_id(record.get("link_id"))
        raw_body = record.get("body")
        if not comment_id or not link_id or not isinstance(raw_body, str):
            drop["missing_fields"] += 1
            return
        # A comment's subreddit is optional (its post decides); a named foreign one is dropped
        # early so the structure of non-travel threads never fills memory.
        if record.get("subreddit") and canonical_subreddit(record.get("subreddit"), self._lookup) is None:
            drop["other_subreddit"] += 1
            return
        parent = record.get("parent_id")
        self._parents[link_id].setdefault(comment_id, str(parent) if parent else f"t3_{link_id}")
        reason = self._comment_problem(record, raw_body)
        body = ""
        if reason is None:
            body = clean_text(raw_body, self.config.max_comment_chars)
            if len(body) < self.config.min_comment_chars:
                reason = "too_short"
        if reason is not None:
            drop[reason] += 1
            return
        reply = _Reply(comment_id, body, coerce_int(record.get("score")), coerce_int(record.get("created_utc")))
        previous = self._replies[link_id].get(comment_id)
        if previous is not None:
            drop["duplicate_id"] += 1
            if previous.score >= reply.score:
                return
        self._replies[link_id][comment_id] = reply

    def _comment_problem(self, record: Mapping[str, Any], raw_body: str) -> str | None:
        if is_deleted_text(raw_body):
            return "deleted" if re.sub(r"\s+", "", raw_body).lower() == "[deleted]" else "removed"
        if coerce_bool(record.get("removed")) or coerce_bool(record.get("spam")):
            return "removed"
        if self._is_bot(record.get("author"), raw_body):
            return "bot"
        if self.config.drop_stickied_comments and (
            coerce_bool(record.get("stickied")) or record.get("distinguished") == "moderator"
        ):
            return "moderator"
        if _known_score(record) < self.config.min_comment_score:
            return "low_score"
        return None

    # -- assembly ----------------------------------------------------------------------------

    def finish(self) -> list[dict[str, Any]]:
        """The clean threads, sorted by thread_id; `self.stats` holds the counts."""
        posts = self._deduplicate_posts()
        threads = []
        for link_id in sorted(self._replies):
            if link_id not in posts:
                reason = "post_dropped" if link_id in self._dropped_post_ids or link_id in self._posts else "orphan"
                self.stats.dropped_comments[reason] += len(self._replies[link_id])
        for thread_id in sorted(posts):
            thread = self._assemble(posts[thread_id])
            if thread is not None:
                threads.append(thread)
        self.stats.threads_kept = len(threads)
        self.stats.comments_kept = sum(len(t["comments"]) for t in threads)
        self.stats.threads_per_subreddit = Counter(t["subreddit"] for t in threads)
        return threads

    def _deduplicate_posts(self) -> dict[str, _Post]:
        groups: dict[str, list[_Post]] = defaultdict(list)
        kept: dict[str, _Post] = {}
        for post in self._posts.values():
            key = content_key(post.title, post.body)
            if len(key) < _MIN_DEDUP_KEY_CHARS:
                kept[post.thread_id] = post
            else:
                groups[key].append(post)
        for group in groups.values():
            group.sort(key=lambda p: (-p.score, p.created_utc, p.thread_id))
            kept[group[0].thread_id] = group[0]
            self.stats.dropped_submissions["duplicate_content"] += len(group) - 1
        return kept

    def _depth(self, link_id: str, comment_id: str) -> int | None:
        """Replies above this comment up to the post; None when the chain breaks."""
        parents = self._parents[link_id]
        depth, current, seen = 0, comment_id, set()
        while True:
            parent = parents.get(current, "")
            if parent.startswith("t3_") or not parent:
                return depth
            parent_id = reddit_id(parent)
            if parent_id not in parents or parent_id in seen:
                return None
            seen.add(parent_id)
            current, depth = parent_id, depth + 1

    def _assemble(self, post: _Post) -> dict[str, Any] | None:
        drop = self.stats.dropped_comments
        replies = self._replies.get(post.thread_id, {})
        placed: list[tuple[_Reply, int]] = []
        for reply in replies.values():
            depth = self._depth(post.thread_id, reply.comment_id)
            if depth is None:
                drop["missing_parent"] += 1
            else:
                placed.append((reply, depth))
        placed.sort(key=lambda rd: (-rd[0].score, rd[0].created_utc, rd[0].comment_id))
        unique, seen_bodies = [], set()
        for reply, depth in placed:
            key = content_key(reply.body)
            if key in seen_bodies:
                drop["duplicate_body"] += 1
                continue
            seen_bodies.add(key)
            unique.append((reply, depth))
        if len(unique) < self.config.min_comments:
            self.stats.dropped_submissions["too_few_comments"] += 1
            drop["post_dropped"] += len(unique)
            return None
        cap = self.config.max_comments_per_thread
        drop["over_cap"] += max(0, len(unique) - cap)
        seen_count = len(self._parents.get(post.thread_id, {}))
        return {
            "thread_id": post.thread_id,
            "subreddit": post.subreddit,
            "title": post.title,
            "body": post.body,
            "permalink": post.permalink,
            "score": post.score,
            # Dumps snapshot a post soon after it is made, so its count can trail what we saw.
            "num_comments": max(post.num_comments or 0, seen_count),
            "created_utc": post.created_utc,
            "comments": [
                {
                    "comment_id": reply.comment_id,
                    "body": reply.body,
                    "score": reply.score,
                    "created_utc": reply.created_utc,
                    "depth": depth,
                }
                for reply, depth in unique[:cap]
            ],
        }
