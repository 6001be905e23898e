"""The local judge: one of the engine's models, reading its verdict or grade from the next-token
probabilities after "Final verdict: [[" / "Rating: [[" (see evaluation.judge for the method)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from evaluation.judge.prompts import (
    GRADE_KIND,
    GRADE_PREFIX,
    GRADES,
    PAIRWISE_PREFIX,
    VERDICT_LABELS,
    JudgeError,
    JudgePrompt,
)


class LocalJudge:
    """One of the engine's models, reading verdicts and grades from its next-token probabilities
    (one teacher-forced pass per prompt, `batch_size` prompts per batched pass)."""

    def __init__(self, engine, model: str, *, fingerprint: str, batch_size: int, max_prompt_tokens: int = 4096,
                 progress: Callable[[int, int], None] | None = None):
        if not hasattr(engine, "score_rows"):
            raise JudgeError("the local judge reads token probabilities, which only the in-process engine gives "
                             "(inference.backend is not local): configure a judge endpoint instead")
        if model not in engine.adapters:
            raise JudgeError(f"judge model {model!r} is not served by the engine (have: {', '.join(engine.adapters)})")
        self.engine = engine
        self.model = model
        self.batch_size = max(1, batch_size)
        self.max_prompt_tokens = max_prompt_tokens
        self.progress = progress
        tokenizer = engine.tokenizer
        self._pairwise_prefix, verdict_ids = _continuations(tokenizer, PAIRWISE_PREFIX, VERDICT_LABELS)
        self._grade_prefix, grade_ids = _continuations(tokenizer, GRADE_PREFIX, [str(g) for g in GRADES])
        self._verdict_ids = {label: ids[0] for label, ids in zip(VERDICT_LABELS, verdict_ids)}
        bad = [label for label, ids in zip(VERDICT_LABELS, verdict_ids) if len(ids) != 1]
        if bad:
            raise JudgeError(f"the judge's tokenizer does not give the verdict labels {bad} one token each after "
                             f"{PAIRWISE_PREFIX!r}: cannot read verdict probabilities")
        if any(len(ids) != 1 for ids in grade_ids[:9]):
            raise JudgeError("the judge's tokenizer does not give the digits 1-9 one token each: cannot read grades")
        self._digit_ids = [ids[0] for ids in grade_ids[:9]]
        ten = grade_ids[9]
        # "10" as one token, or as "1" then "0" (the close "]]" tells "1" from "10").
        self._ten_id = ten[0] if len(ten) == 1 else None
        self._zero_id = ten[1] if len(ten) == 2 and ten[0] == self._digit_ids[0] else None
        if self._ten_id is None and self._zero_id is None:
            raise JudgeError("the judge's tokenizer writes 10 neither as one token nor as '1' '0': cannot read grades")
        _, closing = _continuations(tokenizer, GRADE_PREFIX + "1", ["]]"])
        self._close_id = closing[0][0]
        self.identity = f"local-probabilities-v1:{fingerprint}:{model}"

    def _ids(self, prompt: JudgePrompt) -> list[int]:
        from chatbot import InputTooLongError

        current = prompt
        while True:
            try:
                ids = self.engine.build_prompt(current.messages(), max_input_tokens=self.max_prompt_tokens)
                break
            except InputTooLongError:
                current = current.shorter()
                if current is None:
                    raise JudgeError("a judge prompt is too long for the judge model even with its texts clipped") from None
        if prompt.kind == GRADE_KIND:
            # Teacher forcing "1": logits[-2] are P(first digit), logits[-1] tell "1" from "10".
            return ids + self._grade_prefix + ([] if self._ten_id is not None else [self._digit_ids[0]])
        return ids + self._pairwise_prefix

    def _read(self, prompt: JudgePrompt, logits) -> dict:
        import torch

        if prompt.kind == GRADE_KIND:
            at_digit = logits[-1] if self._ten_id is not None else logits[-2]
            ids = self._digit_ids + ([self._ten_id] if self._ten_id is not None else [])
            first = torch.softmax(at_digit[ids].double(), dim=0).tolist()
            if self._ten_id is None:
                after_one = torch.softmax(logits[-1][[self._zero_id, self._close_id]].double(), dim=0).tolist()
                first = [first[0] * after_one[1], *first[1:9], first[0] * after_one[0]]
            return {"probabilities": {str(g): p for g, p in zip(GRADES, first)}}
        values = torch.softmax(logits[-1][[self._verdict_ids[k] for k in VERDICT_LABELS]].double(), dim=0).tolist()
        return {"probabilities": dict(zip(VERDICT_LABELS, values))}

    def judge_many(self, prompts: Sequence[JudgePrompt]) -> list[dict]:
        rows = [self._ids(p) for p in prompts]
        # Batches of similar lengths: a left-padded row costs as much as the batch's longest.
        order = sorted(range(len(prompts)), key=lambda i: len(rows[i]))
        outputs: list[dict | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            logits = self.engine.score_rows([(rows[i], self.model) for i in batch])
            for i, row_logits in zip(batch, logits):
                outputs[i] = self._read(prompts[i], row_logits)
            if self.progress is not None:
                self.progress(min(start + self.batch_size, len(order)), len(order))
        return outputs


def _continuations(tokenizer, prefix: str, texts: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """The prefix's token ids and, per text, the ids that follow them in the tokenization of
    prefix + text (checked to extend the prefix's ids, so teacher forcing sees what it would read)."""
    prefix_ids = list(tokenizer.encode(prefix, add_special_tokens=False))
    following = []
    for text in texts:
        ids = list(tokenizer.encode(prefix + text, add_special_tokens=False))
        if ids[: len(prefix_ids)] != prefix_ids:
            raise JudgeError(f"the judge's tokenizer merges {text!r} into the prefix {prefix!r}: cannot read it")
        following.append(ids[len(prefix_ids):])
    return prefix_ids, following
