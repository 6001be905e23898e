"""Wayfarer: the web app. Composes the UI from the packages; holds no logic of its own.

    python app.py                       # the configured profile (local by default)
    WAYFARER_PROFILE=gpu python app.py  # a GPU machine or Space
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

# Hugging Face's ZeroGPU client goes first, before anything imports torch: on a ZeroGPU Space
# (SPACES_ZERO_GPU=true) importing it takes over torch's CUDA functions, and it refuses to start
# once CUDA was initialised. Elsewhere the import changes nothing (chatbot/spaces.py).
if importlib.util.find_spec("spaces") is not None:
    import spaces  # noqa: F401

from settings import Settings, apply_runtime, load_settings, with_writable_home  # noqa: E402


def build_app(settings: Settings, engine, *, rag=None, votes=None, warnings: Sequence[str] = ()) -> "gr.Blocks":
    """The whole UI on one engine. `rag` (chatbot.rag.RagChat) and `votes` (arena vote store)
    are optional so the chat alone can be served and tested; `warnings` are shown under the
    header (e.g. that the data lives on a disk that a restart wipes)."""
    import gradio as gr

    from arena.config import ArenaConfig
    from arena.ui import build_arena_tab, build_leaderboard_tab
    from chatbot.ui import build_chat_tab
    from evaluation.ui import build_evaluation_tab

    ui = settings.config.ui
    arena_config = ArenaConfig.from_settings(settings)
    with gr.Blocks(title="Wayfarer - travel chatbot and model arena") as demo:
        gr.Markdown(
            "# Wayfarer\nTravel advice from models fine-tuned on Reddit travel communities. "
            "Answers can be wrong: check visas, prices and opening times with official sources."
        )
        for warning in warnings:
            gr.Markdown(f"**Warning:** {warning}", elem_classes=["wayfarer-warning"])
        with gr.Tab("Chat"):
            build_chat_tab(
                engine,
                examples=ui.examples,
                max_message_chars=ui.max_message_chars,
                rag=rag,
                feedback_store=votes,  # 👍/👎 on chat answers go to the vote store's feedback table
                session_salt_env=arena_config.session_salt_env,
            )
        if votes is not None:
            with gr.Tab("Arena"):
                build_arena_tab(engine, votes, rag, arena_config)
                _retrain_status_block(settings)
            with gr.Tab("Leaderboard") as leaderboard_tab:
                build_leaderboard_tab(votes, arena_config, tab=leaderboard_tab)
        with gr.Tab("Evaluation") as evaluation_tab:
            build_evaluation_tab(settings, tab=evaluation_tab, engine=engine, rag=rag)
    return demo


def _retrain_status_block(settings: Settings) -> None:
    """The retraining loop's status (retraining/'s status file): state, last run, why the
    last candidate was rejected; read again on Refresh."""
    import gradio as gr

    from retraining import read_status, status_markdown

    with gr.Accordion("Retraining loop", open=False):
        text = gr.Markdown(status_markdown(read_status(settings)), elem_id="wayfarer-retrain-status")
        refresh = gr.Button("🔄 Refresh loop status", size="sm")
    refresh.click(lambda: status_markdown(read_status(settings)), outputs=text, api_name="retrain_status")


def main() -> None:
    # A Space without persistent storage has no writable /data: serve from a local folder, and say so.
    settings, storage_warning = with_writable_home(load_settings())
    apply_runtime(settings)
    from arena.store import open_vote_store
    from chatbot.rag import RagChat
    from chatbot.engine import engine_from_settings

    # The local 4-bit engine, or an OpenAI-compatible server (vLLM multi-LoRA) by configuration.
    engine = engine_from_settings(settings)
    rag = RagChat.from_settings(engine, settings)
    votes = open_vote_store(settings)
    ui = settings.config.ui
    demo = build_app(settings, engine, rag=rag, votes=votes, warnings=[storage_warning] if storage_warning else [])
    from retraining import RetrainConfig, start_in_app

    if RetrainConfig.from_settings(settings).in_app:
        # The loop in this process; a published version is swapped in at once (not at the next poll).
        refresh = getattr(engine, "refresh_adapters", None)
        start_in_app(settings, on_publish=(lambda _v: refresh(settings.path("adapters"))) if refresh else None)
    # One pass of the model runs at a time (the engine queues them), but several users may be
    # connected and streaming; the queue lets them wait their turn instead of failing.
    demo.queue(default_concurrency_limit=ui.concurrency_limit)
    demo.launch(server_name=ui.server_name, server_port=ui.server_port)


if __name__ == "__main__":
    main()
