"""The Chat tab: a traveler picks a model and chats with it, answers streaming in.

With Reddit sources on, an answer streams with its RAFT markers rendered (never raw), then the
checked answer replaces it, followed by "What travellers said" (reply sentences, chatbot.evidence)
and the sources; a retrieval problem is said in the answer itself. Destination and "Recent only"
narrow the search. 👍/👎 on an answer is stored (session hashed) in the vote store's feedback
table, for arena.export's chat_feedback (KTO) split.
"""

from __future__ import annotations

import collections
import hashlib
import html
import threading
import time
from collections.abc import Iterator

import gradio as gr

from chatbot.engine import ChatEngine, GenerationError
from chatbot.rag import PreparedTurn, RagChat, display_while_streaming, escape_markdown, strip_display_extras
from modeling.adapters import BASE_ADAPTER
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
            message = html.escape(message, quote=False)
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


ANY_DESTINATION = "Anywhere"
_FEEDBACK_CACHE_SIZE = 4096


def _answer_key(displayed: str) -> str:
    return hashlib.sha256(displayed.strip().encode("utf-8")).hexdigest()


def build_chat_tab(
    engine: ChatEngine,
    *,
    examples: list[str],
    max_message_chars: int,
    rag: RagChat | None = None,
    feedback_store=None,
    session_salt_env: str = "WAYFARER_SESSION_SALT",
) -> None:
    """Render the chat UI into the surrounding Blocks; its API endpoint is `/chat`.

    With `rag`, a checkbox makes answers RAFT-style: retrieved Reddit threads go into the prompt,
    the answer streams with its markers rendered, and the checked answer with the evidence, its
    quotes and sources replaces it at the end. Additional inputs, in API order: model,
    temperature, max_new_tokens, use_retrieval, destination (a subreddit, "" = any), recent_only.
    With `feedback_store` (an arena vote store), 👍/👎 on an answer is recorded.
    """
    defaults = engine.sampling
    default_model = engine.adapters[-1] if len(engine.adapters) > 1 else BASE_ADAPTER
    retrieval_on = rag is not None and rag.retrieval_available
    recent_days = rag.evidence_config.recent_days if rag is not None else 365
    # What the model was sent for each answer on screen (keyed by the displayed text), so a
    # 👍/👎 is stored with the prompt the model really answered (documents included); bounded.
    sent: collections.OrderedDict = collections.OrderedDict()
    sent_lock = threading.Lock()

    def respond(
        message: str,
        history: list[dict],
        model: str,
        temperature: float,
        max_new_tokens: int,
        use_retrieval: bool = False,
        destination: str = "",
        recent_only: bool = False,
    ) -> Iterator[str]:
        if not message or not message.strip():
            return
        if len(message) > max_message_chars:
            raise gr.Error(f"Your message is {len(message):,} characters; the limit is {max_message_chars:,}.")
        messages = history_to_messages(history) + [{"role": "user", "content": message}]
        if rag is not None:
            since = int(time.time()) - recent_days * 86_400 if recent_only else None
            # Sources wanted but unavailable (no index, server down at start): prepare says so in the answer.
            turn = rag.prepare(
                messages, bool(use_retrieval) or not retrieval_on, subreddit=destination or None, since=since
            )
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
                yield display_while_streaming(answer)
        except GenerationError as err:
            raise gr.Error(str(err)) from err
        finally:
            stream.close()  # a user pressing Stop lands here: cancel the generation at once
        if rag is not None:
            final = rag.postprocess(answer, turn.documents, turn.evidence, turn.notice).display_markdown
        else:
            final = display_while_streaming(answer, final=True)
        with sent_lock:
            sent[_answer_key(final)] = (turn.messages, model)
            while len(sent) > _FEEDBACK_CACHE_SIZE:
                sent.popitem(last=False)
        yield final

    def on_like(data: gr.LikeData, history: list[dict], request: gr.Request):
        if feedback_store is None or not isinstance(data.liked, bool):
            return
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        if not isinstance(index, int) or not 0 <= index < len(history):
            return
        conversation = history_to_messages(history[: index + 1])
        if not conversation or conversation[-1]["role"] != "assistant":
            return
        displayed = conversation[-1]["content"]
        with sent_lock:
            prompt, model = sent.get(_answer_key(displayed), (conversation[:-1], ""))
        raw_session = getattr(request, "session_hash", None)
        if not raw_session:
            raise gr.Error("This page has no session; reload it.")
        feedback_store.record_chat_feedback(
            session=feedback_store.hash_session(raw_session, session_salt_env),
            model=model or "unknown",
            prompt=[m for m in prompt if m.get("role") != "system"],
            completion=strip_display_extras(displayed),
            liked=data.liked,
            message_index=index,
        )

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
        subreddits = rag.subreddits if rag is not None else []
        destination = gr.Dropdown(
            choices=[(ANY_DESTINATION, "")] + [(f"r/{name}", name) for name in subreddits],
            value="",
            label="Destination (subreddit searched)",
            interactive=retrieval_on,
        )
        recent_only = gr.Checkbox(
            value=False, label=f"Recent only (threads from the last {recent_days} days)", interactive=retrieval_on
        )
    chatbot = gr.Chatbot(
        label="Wayfarer",
        height=480,
        sanitize_html=True,
        render_markdown=True,
        feedback_options=("Like", "Dislike") if feedback_store is not None else None,
    )
    if feedback_store is not None:
        chatbot.like(on_like, [chatbot], None, api_name="chat_feedback")
    _TextChatInterface(
        fn=respond,
        # New inputs go at the end: API callers pass them positionally.
        additional_inputs=[model_picker, temperature, max_new_tokens, use_retrieval, destination, recent_only],
        additional_inputs_accordion=settings_accordion,
        examples=[
            [question, default_model, defaults.temperature, defaults.max_new_tokens, retrieval_on, "", False]
            for question in examples
        ],
        chatbot=chatbot,
        textbox=gr.Textbox(placeholder="Ask about a destination, transport, costs, visas...", max_length=max_message_chars),
        api_name="chat",
        fill_height=False,
    )
