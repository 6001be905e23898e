"""The Chat tab: a traveler picks a model and chats with it, answers streaming in."""

from __future__ import annotations

import html
from collections.abc import Iterator

import gradio as gr

from chatbot.adapters import BASE_ADAPTER
from chatbot.engine import ChatEngine, GenerationError
from chatbot.rag import PreparedTurn, RagChat, escape_html, escape_markdown
from retrieval.store import BUILD_COMMAND


def history_to_messages(history: list[dict]) -> list[dict]:
    """Gradio 6 history (content as a string or a list of typed parts) -> plain chat messages.

    User turns are kept HTML-escaped in the history for display (see _TextChatInterface);
    the model gets back the raw text the traveler typed."""
    messages = []
    for entry in history:
        content = entry.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if isinstance(content, str) and entry.get("role") in ("user", "assistant"):
            if entry["role"] == "user":
                content = html.unescape(content)
            messages.append({"role": entry["role"], "content": content})
    return messages


class _TextChatInterface(gr.ChatInterface):
    """Shows what a traveler typed as text. The Chatbot renders messages as (sanitized) HTML,
    so `<img src=x>` typed by a user would show as an image and `<b>` would vanish; the user
    turn therefore goes into the history escaped. This overrides a private Gradio method,
    which is why gradio is pinned; tests/test_fault_tolerance.py catches a change."""

    def _append_message_to_history(self, message, history, role="user"):
        if role == "user" and isinstance(message, str):
            message = escape_html(message)
        return super()._append_message_to_history(message, history, role)


def adapter_status_markdown(engine: ChatEngine) -> str:
    lines = [f"**Serving:** {', '.join(engine.adapters)}"]
    for name, reason in sorted(engine.adapter_errors.items()):
        lines.append(f"- `{name}` unavailable: {reason}")
    return "\n".join(lines)


def retrieval_status_markdown(rag: RagChat | None) -> str:
    if rag is None:
        return "Reddit sources are not configured for this app."
    if rag.retrieval_available:
        return f"Reddit sources: {rag.retriever.count():,} indexed passages."
    reason = escape_markdown(rag.unavailable_reason)
    if BUILD_COMMAND not in rag.unavailable_reason and "Chroma server" not in rag.unavailable_reason:
        reason += f". Build the index with `{BUILD_COMMAND}`"
    return f"**Reddit sources are off:** {reason}; then restart the app."


def build_chat_tab(
    engine: ChatEngine, *, examples: list[str], max_message_chars: int, rag: RagChat | None = None
) -> None:
    """Render the chat UI into the surrounding Blocks; its API endpoint is `/chat`.

    With `rag`, a checkbox (the last additional input) makes answers RAFT-style: retrieved
    Reddit threads go into the prompt, the raw text streams while generating, and the checked
    answer with its quotes and sources replaces it at the end.
    """
    defaults = engine.sampling
    default_model = engine.adapters[-1] if len(engine.adapters) > 1 else BASE_ADAPTER
    retrieval_on = rag is not None and rag.retrieval_available

    def respond(
        message: str, history: list[dict], model: str, temperature: float, max_new_tokens: int, use_retrieval: bool = False
    ) -> Iterator[str]:
        if not message or not message.strip():
            return
        if len(message) > max_message_chars:
            raise gr.Error(f"Your message is {len(message):,} characters; the limit is {max_message_chars:,}.")
        messages = history_to_messages(history) + [{"role": "user", "content": message}]
        if rag is not None:
            turn = rag.prepare(messages, bool(use_retrieval) and retrieval_on)
        else:
            turn = PreparedTurn(messages, [])
        try:
            stream = engine.generate(turn.messages, model, temperature=temperature, max_new_tokens=int(max_new_tokens))
        except GenerationError as err:
            raise gr.Error(str(err)) from err
        answer = ""
        try:
            for piece in stream:
                answer += piece
                yield escape_html(answer)
        except GenerationError as err:
            raise gr.Error(str(err)) from err
        finally:
            stream.close()  # a user pressing Stop lands here: cancel the generation at once
        if rag is not None:
            yield rag.postprocess(answer, turn.documents).display_markdown

    with gr.Row():
        model_picker = gr.Dropdown(
            choices=engine.adapters, value=default_model, label="Model", scale=1, interactive=True
        )
        gr.Markdown(adapter_status_markdown(engine))
    with gr.Row():
        use_retrieval = gr.Checkbox(
            value=retrieval_on, interactive=retrieval_on, label="Use Reddit sources (RAFT retrieval)", scale=1
        )
        gr.Markdown(retrieval_status_markdown(rag))
    with gr.Accordion("Generation settings", open=False) as settings_accordion:
        temperature = gr.Slider(0.0, 1.5, value=defaults.temperature, step=0.05, label="Temperature (0 = greedy)")
        max_new_tokens = gr.Slider(16, 1024, value=defaults.max_new_tokens, step=16, label="Max new tokens")
    _TextChatInterface(
        fn=respond,
        # New inputs go at the end: API callers pass them positionally.
        additional_inputs=[model_picker, temperature, max_new_tokens, use_retrieval],
        additional_inputs_accordion=settings_accordion,
        examples=[
            [question, default_model, defaults.temperature, defaults.max_new_tokens, retrieval_on] for question in examples
        ],
        chatbot=gr.Chatbot(label="Wayfarer", height=480, sanitize_html=True, render_markdown=True),
        textbox=gr.Textbox(placeholder="Ask about a destination, transport, costs, visas...", max_length=max_message_chars),
        api_name="chat",
        fill_height=False,
    )
