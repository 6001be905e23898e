"""Wayfarer: the web app. Composes the UI from the packages; holds no logic of its own.

    python app.py                       # the configured profile (local by default)
    WAYFARER_PROFILE=gpu python app.py  # a GPU machine or Space
"""

from __future__ import annotations

from settings import Settings, apply_runtime, load_settings


def build_app(settings: Settings, engine, *, rag=None, votes=None) -> "gr.Blocks":
    """The whole UI on one engine. `rag` (chatbot.rag.RagChat) and `votes` (arena vote store)
    are optional so the chat alone can be served and tested."""
    import gradio as gr

    from arena.config import ArenaConfig
    from arena.ui import build_arena_tab, build_leaderboard_tab
    from chatbot.ui import build_chat_tab
    from evaluation.ui import build_evaluation_tab

    ui = settings.section("ui")
    with gr.Blocks(title="Wayfarer - travel chatbot and model arena") as demo:
        gr.Markdown(
            "# Wayfarer\nTravel advice from models fine-tuned on Reddit travel communities. "
            "Answers can be wrong: check visas, prices and opening times with official sources."
        )
        with gr.Tab("Chat"):
            build_chat_tab(
                engine,
                examples=ui.get("examples", []),
                max_message_chars=int(ui.get("max_message_chars", 4000)),
                rag=rag,
            )
        if votes is not None:
            arena_config = ArenaConfig.from_settings(settings)
            with gr.Tab("Arena"):
                build_arena_tab(engine, votes, rag, arena_config)
            with gr.Tab("Leaderboard") as leaderboard_tab:
                build_leaderboard_tab(votes, arena_config, tab=leaderboard_tab)
        with gr.Tab("Evaluation") as evaluation_tab:
            build_evaluation_tab(settings, tab=evaluation_tab)
    return demo


def main() -> None:
    settings = load_settings()
    apply_runtime(settings)
    from arena.store import open_vote_store
    from chatbot.rag import RagChat
    from chatbot.remote import engine_from_settings

    # The local 4-bit engine, or an OpenAI-compatible server (vLLM multi-LoRA) by configuration.
    engine = engine_from_settings(settings)
    rag = RagChat.from_settings(engine, settings)
    votes = open_vote_store(settings)
    ui = settings.section("ui")
    demo = build_app(settings, engine, rag=rag, votes=votes)
    # One pass of the model runs at a time (the engine queues them), but several users may be
    # connected and streaming; the queue lets them wait their turn instead of failing.
    demo.queue(default_concurrency_limit=int(ui.get("concurrency_limit", 8)))
    demo.launch(server_name=ui["server_name"], server_port=int(ui["server_port"]))


if __name__ == "__main__":
    main()
