"""Prompt building: the model's own chat template, the configured system prompt, and dropping the
oldest turns to fit the input budget."""

from __future__ import annotations

from chatbot.sampling import GenerationError


class InputTooLongError(GenerationError):
    """The newest message alone does not fit the model's input budget."""


def build_prompt(tokenizer, messages: list[dict], system_prompt: str, budget: int) -> list[int]:
    """Token ids from the tokenizer's chat template, dropping the oldest exchanges to fit `budget`."""
    if not messages or messages[-1].get("role") != "user":
        raise GenerationError("the conversation must end with a user message")
    system = [m for m in messages if m.get("role") == "system"]
    turns = [m for m in messages if m.get("role") != "system"]
    if not system and system_prompt:
        system = [{"role": "system", "content": system_prompt}]
    while True:
        ids = tokenizer.apply_chat_template(system + turns, add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        if len(ids) <= budget:
            return ids
        if len(turns) <= 1:
            raise InputTooLongError(
                f"the message is too long for the model ({len(ids)} tokens, limit {budget}); please shorten it"
            )
        # Drop the oldest exchange (a user turn and the reply to it), keep the newest question.
        turns = turns[2:] if len(turns) > 2 else turns[-1:]
