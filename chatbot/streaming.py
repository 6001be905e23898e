"""Stream decoded text from `model.generate` into a queue, per batch row, one word at a time."""

from __future__ import annotations

import queue

from transformers import TextStreamer
from transformers.generation.streamers import BaseStreamer


class _RowDecoder(TextStreamer):
    """transformers' TextStreamer decodes incrementally and only releases text that can no
    longer change (it waits for a space, a newline or a complete CJK character); we reuse that
    logic per row and hand each released piece to the request's queue instead of printing it."""

    def __init__(self, tokenizer, row: int, output: queue.Queue):
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
        self._row = row
        self._output = output

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._output.put((self._row, text))


class BatchQueueStreamer(BaseStreamer):
    """A streamer for a batch of rows (each row may use another adapter, and belong to another
    caller): row i's text goes to `targets[i]` = (that caller's queue, the row number it knows).

    `generate` first passes the prompt ids (skipped), then one new token per row at each step.
    A row that produced an end-of-sequence token is finished: the padding generate appends to
    it afterwards is ignored, so each row's text stops exactly where its solo run would.
    """

    def __init__(self, tokenizer, targets: list[tuple[queue.Queue, int]], eos_token_ids: set[int]):
        self._decoders = [_RowDecoder(tokenizer, row, output) for output, row in targets]
        self._finished = [False] * len(targets)
        self._eos = eos_token_ids
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        tokens = value.reshape(len(self._decoders), -1)
        for row, decoder in enumerate(self._decoders):
            if self._finished[row]:
                continue
            ids = tokens[row].tolist()
            if any(token in self._eos for token in ids):
                self._finished[row] = True
                ids = ids[: next(i for i, token in enumerate(ids) if token in self._eos)]
                if ids:
                    decoder.put(_as_tensor(ids))
                decoder.end()
            else:
                decoder.put(_as_tensor(ids))

    def end(self) -> None:
        for row, decoder in enumerate(self._decoders):
            if not self._finished[row]:
                self._finished[row] = True
                decoder.end()


def _as_tensor(ids: list[int]):
    import torch

    return torch.tensor(ids)


class RowTextDecoder:
    """Token ids of one row in, text pieces out to `output` as (row, text), released as
    transformers' TextStreamer releases them (the continuous-batching engine, token by token)."""

    def __init__(self, tokenizer, row: int, output: queue.Queue):
        self._decoder = _RowDecoder(tokenizer, row, output)

    def put(self, token_id: int) -> None:
        self._decoder.put(_as_tensor([token_id]))

    def end(self) -> None:
        self._decoder.end()
