"""Sampling options (the `generation` section) and picking each row's next token under its own.

A continuous batch mixes rows with different options (one user greedy, another at temperature
0.9 with a seed), so the logits processors run per row on the batch's logits tensor: repetition
penalty, temperature, top-k and top-p as tensor operations over all rows at once, and one draw
per sampling row from that row's own `torch.Generator`, so a seeded row's sample never depends
on who else shares its step. transformers' LogitsProcessorList applies one setting to the whole
batch, which is why this is written here.

Loops: a small model's greedy answer can fall into "no, no, no, ..." or one sentence over and
over. `max_ngram_repeats` caps how often one token n-gram (`repeat_ngram_size` tokens) may occur
in the answer: the token that would make it occur once more is excluded. Unlike transformers'
`no_repeat_ngram_size` it counts the answer only, never the prompt, so a RAG answer can still
copy a document word for word, and it allows a few repeats, so the two quote markers of a RAFT
answer ("##begin_quote##" twice) stay possible.

The repetition penalty counts the answer's own tokens only, not the prompt's (transformers and
vLLM count both). Counting the prompt penalizes a RAG answer for copying its documents: greedy
RAFT answers to the 29 golden questions held a verified quote 52% of the time with the penalty
on prompt and answer, 76% with it on the answer only, and 83% without it, when 17% of base's
answers looped (Intel Xeon with AMX, bench/study_bench.py).
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict


# What the repetition penalty counts; part of cached answers' keys (evaluation/runner.py), so
# answers generated under another rule are generated again.
REPETITION_PENALTY_SCOPE = "answer-tokens"


class GenerationError(RuntimeError):
    """A request could not be answered (bad input or a failure while generating)."""


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """The `generation` section: defaults every request can override. The values come from
    wayfarer.yaml only (`from_settings`); `seed` is per request (None: unseeded)."""

    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    repeat_ngram_size: int
    max_ngram_repeats: int
    max_input_tokens: int
    seed: int | None = None

    @classmethod
    def from_settings(cls, settings) -> "SamplingConfig":
        return cls(**settings.config.generation.model_dump())

    def override(self, **changes) -> "SamplingConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise GenerationError(f"unknown sampling options: {sorted(unknown)}")
        updated = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        if updated.max_new_tokens < 1:
            raise GenerationError("max_new_tokens must be at least 1")
        if updated.temperature < 0 or not 0 < updated.top_p <= 1:
            raise GenerationError("temperature must be >= 0 and top_p in (0, 1]")
        return updated

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class RowSampler:
    """Per-row sampling state for the rows of a batch, kept in tensors in row order.

    `seen` marks every token a row has in its answer so far (what the repetition penalty applies
    to; the prompt is left out, see the module docstring). Rows are added and removed as
    requests join and leave.
    """

    def __init__(self, vocab_size: int, device):
        import torch

        self.vocab_size = vocab_size
        self.device = device
        self.options: list[SamplingConfig] = []
        self.generators: list = []
        self.seen = torch.zeros(0, vocab_size, dtype=torch.bool, device=device)
        self._penalty = torch.ones(0, 1, device=device)
        self.answers: list[list[int]] = []  # each row's answer tokens so far
        # Each row's n-gram counts, keyed by the first n-1 tokens: {prefix: Counter(next token)}.
        self.ngram_counts: list[defaultdict] = []

    def __len__(self) -> int:
        return len(self.options)

    def add(self, options: SamplingConfig, seed: int | None) -> None:
        import torch

        # Checked here, in the decode loop, rather than in SamplingConfig.override: a remote
        # backend passes the options on to its server, which has its own rules (vLLM: top_k -1
        # means no top-k). The engine fails this request only (chatbot/scheduler.py).
        if options.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: no top-k filter), not {options.top_k}")
        if not options.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, not {options.repetition_penalty}")
        if options.max_ngram_repeats < 0 or options.repeat_ngram_size < 1:
            raise ValueError("max_ngram_repeats must be >= 0 (0: no limit) and repeat_ngram_size >= 1")
        generator = torch.Generator(device=self.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        row = torch.zeros(1, self.vocab_size, dtype=torch.bool, device=self.device)  # the answer's tokens
        self.options.append(options)
        self.generators.append(generator)
        self.seen = torch.cat([self.seen, row])
        self._penalty = torch.cat([self._penalty, torch.tensor([[options.repetition_penalty]], device=self.device)])
        self.answers.append([])
        self.ngram_counts.append(defaultdict(Counter))

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (indices into the current rows), in that order."""
        import torch

        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.options = [self.options[i] for i in rows]
        self.generators = [self.generators[i] for i in rows]
        self.seen = self.seen.index_select(0, index)
        self._penalty = self._penalty.index_select(0, index)
        self.answers = [self.answers[i] for i in rows]
        self.ngram_counts = [self.ngram_counts[i] for i in rows]

    def _banned_tokens(self, row: int) -> list[int]:
        """Tokens that would make one of the row's answer n-grams occur more than allowed."""
        options = self.options[row]
        n, limit = options.repeat_ngram_size, options.max_ngram_repeats
        answer = self.answers[row]
        if not limit or len(answer) < n - 1:
            return []
        followers = self.ngram_counts[row].get(tuple(answer[len(answer) - n + 1:]), {})
        return [token for token, count in followers.items() if count >= limit]

    def _record(self, row: int, token: int) -> None:
        answer = self.answers[row]
        answer.append(token)
        n = self.options[row].repeat_ngram_size
        if self.options[row].max_ngram_repeats and len(answer) >= n:
            self.ngram_counts[row][tuple(answer[len(answer) - n:-1])][token] += 1

    def next_tokens(self, logits, rows=None) -> list[int]:
        """One token per row from (len(rows), vocab) logits, rows being indices of this sampler's
        rows (default: all, in order); records each token as seen by its row."""
        import torch

        rows = list(range(len(self.options))) if rows is None else list(rows)
        device = logits.device
        index = torch.tensor(rows, dtype=torch.long, device=device)
        options = [self.options[i] for i in rows]
        logits = logits.float()
        if any(o.repetition_penalty != 1.0 for o in options):
            penalty = self._penalty.index_select(0, index)
            penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
            logits = torch.where(self.seen.index_select(0, index), penalized, logits)
        banned = [(slot, self._banned_tokens(row)) for slot, row in enumerate(rows)]
        if any(tokens for _, tokens in banned):
            logits = logits.clone()  # the caller's logits stay as the model gave them
            for slot, tokens in banned:
                logits[slot, tokens] = float("-inf")
        tokens = logits.argmax(-1)
        sampled = [slot for slot, o in enumerate(options) if not o.greedy]
        if sampled:
            chosen = logits.index_select(0, torch.tensor(sampled, device=device))
            chosen = chosen / torch.tensor([[options[s].temperature] for s in sampled], device=device)
            ordered, order = chosen.sort(dim=-1, descending=True)
            ranks = torch.arange(chosen.shape[-1], device=device)
            top_k = torch.tensor([[options[s].top_k if options[s].top_k > 0 else chosen.shape[-1]] for s in sampled], device=device)
            ordered = ordered.masked_fill(ranks >= top_k, float("-inf"))
            probs = ordered.softmax(-1)
            top_p = torch.tensor([[options[s].top_p] for s in sampled], device=device)
            # Drop a token when the ones above it already hold top_p (the first always stays).
            probs = probs.masked_fill(probs.cumsum(-1) - probs > top_p, 0.0)
            for place, slot in enumerate(sampled):
                pick = torch.multinomial(probs[place], 1, generator=self.generators[rows[slot]])
                tokens[slot] = order[place, pick[0]]
        self.seen[index, tokens] = True
        chosen_tokens = tokens.tolist()
        for row, token in zip(rows, chosen_tokens):
            self._record(row, token)
        return chosen_tokens
