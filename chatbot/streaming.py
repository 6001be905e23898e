"""Stream decoded text from `model.generate` into a queue, one piece per finished word."""

from __future__ import annotations

import queue

from transformers import TextStreamer


class QueueStreamer(TextStreamer):
    """transformers' TextStreamer decodes incrementally and only releases text that can no
    longer change (it waits for a space, a newline or a complete CJK character); we reuse that
    logic and hand each released piece to a queue instead of printing it."""

    def __init__(self, tokenizer, output: queue.Queue):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._output = output

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self._output.put(text)
