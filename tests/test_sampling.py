"""The n-gram repeat limit of the per-row sampler (chatbot/sampling.py), on logits that loop.

The logits always prefer the token after the last one in a fixed cycle 1 2 3 4 1 2 ..., the way
a looping model prefers to go on with its loop; the limit must break the loop for the row that
has it and leave the other row alone.
"""

import torch

from chatbot.sampling import RowSampler, SamplingConfig
from settings import load_settings

GENERATION = SamplingConfig.from_settings(load_settings())
VOCAB = 8
CYCLE = [1, 2, 3, 4]


def looping_logits(previous: list[int | None]) -> torch.Tensor:
    logits = torch.zeros(len(previous), VOCAB)
    for row, token in enumerate(previous):
        follower = CYCLE[0] if token not in CYCLE else CYCLE[(CYCLE.index(token) + 1) % len(CYCLE)]
        logits[row, follower] = 5.0
        logits[row, 6] = 4.0  # the runner-up the limit falls back to
    return logits


def ngram_counts(tokens: list[int], n: int) -> int:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return max(grams.count(g) for g in grams)


def test_an_answer_ngram_occurs_at_most_max_ngram_repeats_times_and_only_in_its_row():
    limited = GENERATION.override(temperature=0, repetition_penalty=1.0, repeat_ngram_size=4, max_ngram_repeats=2)
    unlimited = GENERATION.override(temperature=0, repetition_penalty=1.0, max_ngram_repeats=0)
    sampler = RowSampler(VOCAB, "cpu")
    # The sampler never sees the prompt: prompt n-grams never count (RAG answers copy documents).
    sampler.add(limited, seed=None)
    sampler.add(unlimited, seed=None)
    answers: list[list[int]] = [[], []]
    previous: list[int | None] = [None, None]
    for _ in range(24):
        tokens = sampler.next_tokens(looping_logits(previous))
        for row, token in enumerate(tokens):
            answers[row].append(token)
        previous = tokens
    assert answers[0][:8] == CYCLE * 2  # the first two occurrences are allowed
    assert ngram_counts(answers[0], 4) <= 2, answers[0]
    assert answers[1] == CYCLE * 6  # the unlimited row keeps looping: the limit is per row


def test_rows_keep_their_own_ngram_counts_when_the_batch_is_compacted():
    limited = GENERATION.override(temperature=0, repetition_penalty=1.0, repeat_ngram_size=4, max_ngram_repeats=1)
    sampler = RowSampler(VOCAB, "cpu")
    sampler.add(GENERATION.override(temperature=0, max_ngram_repeats=0), seed=None)
    sampler.add(limited, seed=None)
    previous: list[int | None] = [None, None]
    for _ in range(4):
        previous = sampler.next_tokens(looping_logits(previous))
    sampler.keep([1])  # the first row leaves; the limited row moves to slot 0 with its counts
    answer = []
    last = [previous[1]]
    for _ in range(8):
        last = sampler.next_tokens(looping_logits(last))
        answer.extend(last)
    assert ngram_counts(CYCLE + answer, 4) == 1, answer


def test_the_repetition_penalty_counts_the_answers_tokens_only():
    """A token is penalized once the answer holds it, never before: the sampler is not given the
    prompt, so copying a document (a RAG quote) is not penalized."""
    penalized = GENERATION.override(temperature=0, repetition_penalty=2.0, max_ngram_repeats=0)
    sampler = RowSampler(VOCAB, "cpu")
    sampler.add(penalized, seed=None)
    logits = torch.zeros(1, VOCAB)
    logits[0, 1], logits[0, 6] = 3.0, 2.0
    assert sampler.next_tokens(logits) == [1]  # nothing penalized yet
    assert sampler.next_tokens(logits) == [6]  # 1 is in the answer now: 3.0 / 2 < 2.0
