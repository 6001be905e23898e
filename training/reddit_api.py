"""Live ingestion from the Reddit API with PRAW, producing the same raw dicts as the dumps.

Credentials come only from the environment (REDDIT_CLIENT_ID, REDDIT_CLIENT_SECRET,
REDDIT_USER_AGENT, and optionally REDDIT_USERNAME + REDDIT_PASSWORD for a script app acting as
a user). They never appear in a repr, a log line or an error message.

PRAW objects are converted to the field names of Pushshift submissions and comments, so
`training.cleaning` runs unchanged on both sources. Conversion reads the attributes PRAW already
holds (`vars(obj)`), never `getattr`: a missing attribute on a lazy PRAW object would trigger a
network fetch per record.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

REQUIRED_ENV = ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "REDDIT_USER_AGENT")
USER_ENV = ("REDDIT_USERNAME", "REDDIT_PASSWORD")
LISTINGS = ("top", "new", "hot")
TIME_FILTERS = ("all", "day", "hour", "month", "week", "year")
REDACTED = "***"

SUBMISSION_FIELDS = (
    "id", "name", "title", "selftext", "score", "num_comments", "created_utc", "permalink", "url",
    "is_self", "over_18", "stickied", "removed_by_category", "distinguished", "link_flair_text",
)
COMMENT_FIELDS = (
    "id", "name", "body", "score", "created_utc", "link_id", "parent_id", "permalink", "stickied",
    "distinguished", "is_submitter",
)


class MissingCredentialsError(RuntimeError):
    """Some Reddit API environment variables are not set (the message names them)."""


class RedditApiError(RuntimeError):
    """The Reddit API refused or failed a request."""


@dataclasses.dataclass(frozen=True)
class RedditCredentials:
    client_id: str
    client_secret: str
    user_agent: str
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RedditCredentials":
        environ = os.environ if environ is None else environ
        values = {name: (environ.get(name) or "").strip() for name in REQUIRED_ENV + USER_ENV}
        missing = [name for name in REQUIRED_ENV if not values[name]]
        # A user login needs both halves; one alone is a mistake worth naming.
        if bool(values["REDDIT_USERNAME"]) != bool(values["REDDIT_PASSWORD"]):
            missing += [name for name in USER_ENV if not values[name]]
        if missing:
            raise MissingCredentialsError(
                "Reddit API credentials missing: set " + ", ".join(missing) + " in the environment "
                "(create a 'script' app at https://www.reddit.com/prefs/apps; REDDIT_USERNAME and "
                "REDDIT_PASSWORD are optional and go together)"
            )
        return cls(
            client_id=values["REDDIT_CLIENT_ID"],
            client_secret=values["REDDIT_CLIENT_SECRET"],
            user_agent=values["REDDIT_USER_AGENT"],
            username=values["REDDIT_USERNAME"] or None,
            password=values["REDDIT_PASSWORD"] or None,
        )

    def __repr__(self) -> str:
        user = REDACTED if self.username else None
        return (
            f"RedditCredentials(client_id={REDACTED!r}, client_secret={REDACTED!r}, "
            f"user_agent={self.user_agent!r}, username={user!r}, password={REDACTED if self.password else None!r})"
        )

    __str__ = __repr__


@dataclasses.dataclass(frozen=True)
class ApiConfig:
    """`data.cleaning.api` in wayfarer.yaml."""

    listings: tuple[str, ...]
    time_filter: str  # for the `top` listing
    limit: int  # posts per listing and subreddit
    comment_sort: str

    def __post_init__(self):
        object.__setattr__(self, "listings", tuple(self.listings))
        unknown = [name for name in self.listings if name not in LISTINGS]
        if unknown or self.time_filter not in TIME_FILTERS or self.limit < 1:
            raise ValueError(
                f"data.cleaning.api: listings must be among {LISTINGS} (got {list(self.listings)}), "
                f"time_filter among {TIME_FILTERS} (got {self.time_filter!r}), limit >= 1 (got {self.limit})"
            )


def api_config_from_settings(settings) -> ApiConfig:
    from settings import build_dataclass

    return build_dataclass(ApiConfig, settings.section("data")["cleaning"]["api"])


def create_reddit(credentials: RedditCredentials | None = None):
    """A praw.Reddit client (no request is made until data is read)."""
    import praw

    credentials = credentials or RedditCredentials.from_env()
    options: dict[str, Any] = {
        "client_id": credentials.client_id,
        "client_secret": credentials.client_secret,
        "user_agent": credentials.user_agent,
        "check_for_updates": False,
    }
    if credentials.username:
        options.update(username=credentials.username, password=credentials.password)
    reddit = praw.Reddit(**options)
    if not credentials.username:
        reddit.read_only = True
    log.info("Reddit client ready (%s)", "user login" if credentials.username else "read-only")
    return reddit


def _name(value: Any) -> str | None:
    """Author/subreddit objects -> their name; a deleted author (None) -> "[deleted]"."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    data = vars(value)
    return data.get("name") or data.get("display_name") or str(value)


def submission_to_record(submission) -> dict[str, Any]:
    """A praw Submission -> a dict with the field names of a Pushshift RS_ line."""
    data = vars(submission)
    record = {key: data[key] for key in SUBMISSION_FIELDS if key in data}
    record["author"] = _name(data.get("author")) or "[deleted]"
    record["subreddit"] = _name(data.get("subreddit"))
    record.setdefault("name", f"t3_{record.get('id')}")
    return record


def comment_to_record(comment, submission=None) -> dict[str, Any]:
    """A praw Comment -> a dict with the field names of a Pushshift RC_ line."""
    data = vars(comment)
    record = {key: data[key] for key in COMMENT_FIELDS if key in data}
    record["author"] = _name(data.get("author")) or "[deleted]"
    subreddit = data.get("subreddit") or (vars(submission).get("subreddit") if submission is not None else None)
    record["subreddit"] = _name(subreddit)
    if "link_id" not in record and submission is not None:
        record["link_id"] = f"t3_{vars(submission)['id']}"
    record.setdefault("name", f"t1_{record.get('id')}")
    return record


def _listing(subreddit, listing: str, config: ApiConfig, limit: int):
    if listing == "top":
        return subreddit.top(time_filter=config.time_filter, limit=limit)
    if listing == "new":
        return subreddit.new(limit=limit)
    return subreddit.hot(limit=limit)


def fetch_records(
    reddit,
    subreddits: Iterable[str],
    config: ApiConfig,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Submissions of each subreddit's listings, each followed by all its loaded comments."""
    import prawcore

    limit = limit or config.limit
    seen: set[str] = set()
    for name in subreddits:
        for listing in config.listings:
            try:
                for submission in _listing(reddit.subreddit(name), listing, config, limit):
                    if submission.id in seen:
                        continue
                    seen.add(submission.id)
                    yield submission_to_record(submission)
                    submission.comment_sort = config.comment_sort
                    # limit=0: drop "load more comments" stubs instead of paying a request each.
                    submission.comments.replace_more(limit=0)
                    for comment in submission.comments.list():
                        yield comment_to_record(comment, submission)
            except prawcore.exceptions.OAuthException as err:
                raise RedditApiError(f"Reddit refused the credentials ({type(err).__name__}); check the REDDIT_* variables") from None
            except (prawcore.exceptions.Forbidden, prawcore.exceptions.NotFound, prawcore.exceptions.Redirect) as err:
                # A private, banned or misspelled subreddit costs its posts, not the run.
                log.warning("r/%s %s: %s, skipping", name, listing, type(err).__name__)
            except prawcore.exceptions.ResponseException as err:
                status = getattr(getattr(err, "response", None), "status_code", "?")
                raise RedditApiError(f"Reddit answered {status} for r/{name} {listing}; check the REDDIT_* variables") from None
            except prawcore.exceptions.PrawcoreException as err:
                raise RedditApiError(f"Reddit request failed for r/{name} {listing}: {type(err).__name__}") from None
