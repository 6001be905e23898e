"""Reddit upvotes as human judgements: does an automatic evaluator prefer the upvoted reply?

The arena needs votes before any evaluator can be checked against humans; Reddit has them
already. From every golden (held-out) thread, a pair is two replies to the post itself, both at
least `data.datasets.answer_min_chars` long, the upvoted one scoring at least
`evaluation.reddit_preference.min_score_ratio` times the other (and more). Every pair of such
replies in a thread counts, so a thread with k replies gives up to k(k-1)/2 pairs.

What each evaluator scores a reply against:

* reference-based metrics (BLEU, ROUGE, BERTScore-style, semantic similarity): the thread's
  best-scored reply that is neither of the two (a golden answer that is not in the pair);
  pairs from threads with only two replies have no reference and are left out of these rows;
* answer relevance: the question; faithfulness: the documents retrieved for the question from
  the index (golden threads are never indexed, so a reply cannot find itself). Context
  precision and recall score the retrieval, not the reply: the same for both replies, so they
  cannot prefer either and are reported as not applicable;
* the LLM judge: the MT-Bench pairwise prompt in both orders (swap rule) and the 1-10 grade of
  each reply, without a reference: it reads the post and the replies as a Reddit reader does;
* a length baseline: the longer reply.

An evaluator "prefers the upvoted reply" on a pair when it scores it higher (ties count half,
so 0.5 is chance); the report gives that share with a bootstrap interval over pairs.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

from settings import Settings

UPVOTED = "upvoted"  # the pair's "model" names in judge results
OTHER = "other"


@dataclasses.dataclass(frozen=True)
class Reply:
    comment_id: str
    body: str
    score: int


@dataclasses.dataclass(frozen=True)
class RedditPair:
    pair_id: str  # thread id + the two comment ids
    thread_id: str
    question: str
    upvoted: Reply
    other: Reply
    reference: str | None  # the best other reply of the thread, None when the thread has only these two


def _comments(value) -> list[dict]:
    # A Sequence-of-struct column may read back as a dict of lists; accept both layouts.
    if isinstance(value, Mapping):
        keys = list(value)
        return [dict(zip(keys, row)) for row in zip(*(value[k] for k in keys))]
    return list(value or [])


def thread_pairs(thread_id: str, question: str, comments: Sequence[Mapping], *, min_chars: int,
                 min_score_ratio: float) -> list[RedditPair]:
    """Every pair of top-level replies of one thread with a clear upvote preference."""
    replies, seen = [], set()
    for comment in comments:
        body = str(comment.get("body") or "").strip()
        if int(comment.get("depth") or 0) != 0 or len(body) < min_chars or body in seen:
            continue
        seen.add(body)
        replies.append(Reply(str(comment.get("comment_id") or len(replies)), body, int(comment.get("score") or 0)))
    replies.sort(key=lambda r: (-r.score, r.comment_id))  # best first; ties in a stable order
    pairs = []
    for first, second in itertools.combinations(replies, 2):
        upvoted, other = (first, second) if first.score >= second.score else (second, first)
        if upvoted.score <= other.score or upvoted.score < min_score_ratio * other.score:
            continue
        rest = [r for r in replies if r is not upvoted and r is not other]
        pairs.append(RedditPair(f"{thread_id}:{upvoted.comment_id}>{other.comment_id}", thread_id, question,
                                upvoted, other, rest[0].body if rest else None))
    return pairs


def build_pairs(settings: Settings, config, questions: Mapping[str, str]) -> tuple[list[RedditPair], str]:
    """The Reddit-preference pairs of the golden threads (thread-id order), and a note saying
    why there are none when there are none. `questions`: thread id -> the golden question."""
    from corpus import load_golden_thread_ids, threads_exist

    golden = load_golden_thread_ids(settings.path("datasets"))
    if not golden:
        return [], "no golden thread ids (datasets/golden_thread_ids.json): build the datasets first"
    threads_path = settings.path("threads")
    if not threads_exist(threads_path):
        return [], f"no cleaned threads at {threads_path}"
    from datasets import load_from_disk

    min_chars = settings.config.data.datasets.answer_min_chars  # the datasets' answer length floor
    pairs: list[RedditPair] = []
    for row in sorted(load_from_disk(str(threads_path)), key=lambda r: str(r["thread_id"])):
        thread_id = str(row["thread_id"])
        if thread_id in golden and thread_id in questions:
            pairs += thread_pairs(thread_id, questions[thread_id], _comments(row["comments"]), min_chars=min_chars,
                                  min_score_ratio=config.min_score_ratio)
    if config.max_pairs:
        pairs = pairs[: config.max_pairs]
    note = "" if pairs else (f"no golden thread has two replies of at least {min_chars} characters with a score "
                             f"ratio of {config.min_score_ratio:g} or more")
    return pairs, note


def preference(upvoted: float | None, other: float | None, tolerance: float = 1e-9) -> float | None:
    """1 when the upvoted reply scores higher, 0 when lower, 0.5 on a tie; None when either is missing."""
    if upvoted is None or other is None:
        return None
    if abs(upvoted - other) <= tolerance:
        return 0.5
    return 1.0 if upvoted > other else 0.0
