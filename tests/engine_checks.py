"""Checks that a batched row is that row's own answer, valid on every CPU.

Why not compare batched text with solo text: a matmul over a batch of another shape may sum in
another order, so a row's logits differ from its solo run by float rounding (measured on row 0
of one prompt, batch of 3 vs 1: 9.8e-5 on a Xeon with AVX-512/AMX, 4.5e-5 on an AMD EPYC with
AVX-512/AVX512-BF16), and a greedy answer can then take another token at a near-tie and leave
its solo text. Nothing leaked; the comparison was wrong. So we check, on teacher-forced logits
(ChatEngine.score_rows, where one flipped token cannot change what follows):

* EXACTLY: a row's logits do not depend on the other rows' adapters. The same rows scored with
  every row on this row's adapter are the same shape and run the same kernels, so they must be
  bit-identical; a leaked adapter changes them by whole logits.
* Up to rounding: a row's logits equal its solo run's: the largest difference is under
  LOGIT_TOLERANCE, and the argmax agrees at ARGMAX_AGREEMENT of the positions of all rows
  (pooled: a row of ~90 positions may hold one near-tie closer than the rounding).

Generated text (the decode loop, which the public API only shows as text) is checked token by
token against its own row: every token a greedy answer chose is its own row's argmax up to
rounding, teacher-forced over that answer (`assert_answers_are_greedy_for_their_rows`). A near-tie
that went the other way in a batch passes wherever it falls; a row answered with another row's
prompt or adapter does not. (Comparing the text with the solo text failed on the AMX Xeon when
two rows' solo answers shared their first characters and a near-tie fell at the second token.)
"""

from __future__ import annotations

import os

# The tolerance is 100x the largest batch-shape rounding measured (9.8e-5, Xeon AVX-512/AMX, fp32
# activations), and thousands of times smaller than what a wrong adapter does: the test adapters
# move these logits by more than 40 (measured on the AMD EPYC), a trained one by more than 0.1.
LOGIT_TOLERANCE = 1e-2
ARGMAX_AGREEMENT = 0.99


def answer_ids(engine, text: str) -> list[int]:
    """The token ids of an answer's text, as the engine's tokenizer writes them."""
    return list(engine.tokenizer(text, add_special_tokens=False)["input_ids"])


def answered_rows(engine, requests: list[tuple[list[dict], str]], answers: list[str]) -> list[tuple[list[int], str]]:
    """(prompt + answer ids, adapter) rows to score teacher-forced: every request's prompt
    followed by the given answer to it."""
    return [(engine.build_prompt(messages) + answer_ids(engine, answer), adapter)
            for (messages, adapter), answer in zip(requests, answers)]


def solo_difference(batched, solo) -> tuple[float, float]:
    """(largest absolute logit difference, share of positions whose argmax agrees)."""
    largest = (batched - solo).abs().max().item()
    agreement = (batched.argmax(-1) == solo.argmax(-1)).float().mean().item()
    return largest, agreement


def assert_rows_are_their_own(engine, rows: list[tuple[list[int], str]]) -> None:
    """Score `rows` in one batched pass (left-padded, each with its own adapter) and check every
    row: bit-identical to the same batch with all rows on its adapter, close to its solo run."""
    import torch

    batched = engine.score_rows(rows)
    same_adapter_batches: dict[str, list] = {}
    agreeing = positions = 0
    per_row = []
    for row, (ids, adapter) in enumerate(rows):
        assert batched[row].shape == (len(ids), batched[row].shape[-1])
        if any(other != adapter for _, other in rows):
            if adapter not in same_adapter_batches:
                same_adapter_batches[adapter] = engine.score_rows([(other_ids, adapter) for other_ids, _ in rows])
            same = same_adapter_batches[adapter][row]
            assert torch.equal(batched[row], same), (
                f"row {row} ({adapter}) depends on the other rows' adapters: "
                f"{(batched[row] - same).abs().max().item():.3g} from the same batch all on '{adapter}'")
        solo = engine.score_rows([(ids, adapter)])[0]
        largest, agreement = solo_difference(batched[row], solo)
        assert largest < LOGIT_TOLERANCE, (
            f"row {row} ({adapter}) is not its solo run: logits differ by up to {largest:.3g} "
            f"(tolerance {LOGIT_TOLERANCE}); argmax agrees at {agreement:.1%} of positions")
        agreeing += round(agreement * len(ids))
        positions += len(ids)
        per_row.append(f"{adapter}: {agreement:.1%}")
    assert agreeing / positions >= ARGMAX_AGREEMENT, f"argmax agrees with the solo runs at {per_row}"


def common_start(a: str, b: str) -> int:
    """How many leading characters two texts share."""
    return len(os.path.commonprefix([a, b]))


def streamed_text(engine, ids: list[int]) -> str:
    """The text the engine streams for answer tokens `ids`: its own per-row decoder
    (chatbot.streaming.RowTextDecoder, transformers' TextStreamer rules: the cache restarts after a
    newline), so the comparison with a generated answer is exact, whatever the tokenizer's clean-up."""
    import queue

    from chatbot.streaming import RowTextDecoder

    pieces: queue.Queue = queue.Queue()
    decoder = RowTextDecoder(engine.tokenizer, 0, pieces)
    for token in ids:
        decoder.put(token)
    decoder.end()
    return "".join(pieces.get()[1] for _ in range(pieces.qsize()))


def greedy_path_to(engine, messages: list[dict], adapter: str, answer: str) -> str:
    """Walk the row's own greedy path (alone, teacher-forced on its own prompt and adapter) along
    `answer`: at each step take a token whose logit is within LOGIT_TOLERANCE of the largest and
    whose streamed text continues `answer`. Returns how much of `answer` that path reaches (all of
    it when the answer is its row's greedy answer up to rounding). Token by token from the logits,
    not by re-tokenizing the text: "((" generated as "(" + "(" would re-tokenize as one token."""
    prompt = engine.build_prompt(messages)
    ids: list[int] = []
    text = ""
    for _ in range(4 * len(answer) + 8):
        if text == answer:
            break
        logits = engine.score_rows([(prompt + ids, adapter)])[0][-1]
        near = (logits >= logits.max() - LOGIT_TOLERANCE).nonzero().flatten().tolist()
        for token in sorted(near, key=lambda t: -float(logits[t])):
            extended = streamed_text(engine, ids + [token])
            # A token may end inside a character (U+FFFD until the next byte comes).
            if extended != text and answer.startswith(extended.rstrip("\ufffd")):
                ids.append(token)
                text = extended
                break
        else:
            break
    return text.rstrip("\ufffd")


def assert_answers_are_greedy_for_their_rows(engine, requests: list[tuple[list[dict], str]], answers: list[str]) -> None:
    """Each greedy answer (raw argmax: no repetition penalty, no n-gram limit) is a greedy path of
    its OWN row: scored alone with its own prompt and adapter, every token it took is the argmax up
    to rounding (`greedy_path_to` reaches the whole answer). A near-tie that went the other way in
    a batch passes wherever it falls; an answer from another row's prompt or adapter takes a token
    its own row's model does not rank first, and fails there."""
    for row, ((messages, adapter), answer) in enumerate(zip(requests, answers)):
        assert answer.strip(), f"row {row} answered nothing"
        reached = greedy_path_to(engine, messages, adapter, answer)
        assert reached == answer, (
            f"row {row} ({adapter}) is not its own greedy answer: {answer!r}; its own model's greedy "
            f"path (up to rounding) leaves it after {reached!r}")
