"""The Arena and Leaderboard tabs.

Anonymity: the browser only ever holds the battle id (in a gr.State, which Gradio keeps on the
server anyway).

Vote integrity: a voter is known by the salted HMAC of Gradio's session id AND of the client
address. The address is `request.client.host` as uvicorn (under Gradio) resolves it: the TCP
peer, or, when the peer is a proxy listed in the FORWARDED_ALLOW_IPS environment variable
(uvicorn's default: 127.0.0.1 and ::1), the nearest untrusted address in its X-Forwarded-For
header. Behind a reverse proxy on another host, list that proxy in FORWARDED_ALLOW_IPS, or every
voter has the proxy's address; never list "*" on a server clients reach directly, or they can
name any address they like. The vote rate limits (arena.config.vote_limits) are checked by the
vote store, per session and per address, in the vote's own transaction. Model names live in the vote store and reach the page for the first time in the
response to a vote. Error messages that could name a model are rewritten to "Model A/B".
"""

from __future__ import annotations

import collections
import threading

import gradio as gr

from arena.battle import Arena, BattleFailed, NotEnoughModelsError
from arena.config import ArenaConfig
from arena.leaderboard import Leaderboard, leaderboard_from_store, leaderboard_summary, write_plots
from arena.records import VoteRejected, VoteStore
from arena.sessions import hash_client, hash_session

VOTE_BUTTONS = (
    ("model_a", "👈 A is better", "arena_vote_a"),
    ("model_b", "👉 B is better", "arena_vote_b"),
    ("tie", "🤝 Tie", "arena_vote_tie"),
    ("both_bad", "👎 Both are bad", "arena_vote_both_bad"),
)
VOTE_WORDS = {"model_a": "Model A is better", "model_b": "Model B is better", "tie": "a tie", "both_bad": "both are bad"}
RULES = (
    "### ⚔️ Arena: which answer is better?\n"
    "Ask a travel question. Two anonymous models answer it side by side, using the same retrieved "
    "Reddit posts. Vote once both answers are complete; the names are revealed after your vote. "
    "Follow-up questions go to the same two models until you vote."
)
_DISPLAY_CACHE_SIZE = 2048


def _anonymise(message: str, names: tuple[str, str]) -> str:
    for name, side in zip(names, ("Model A", "Model B")):
        if name:
            message = message.replace(f"'{name}'", side).replace(name, side)
    return message


def build_arena_tab(engine, store: VoteStore, rag, config: ArenaConfig) -> None:
    """Render the Arena into the surrounding Blocks (inside a gr.Tab).

    "What travellers said" (the reply sentences of chatbot.evidence) is shown once, under the
    revealed names, after the vote: both sides answered from the same documents, so the
    evidence belongs to neither, and shown before the vote it would turn the vote into "which
    answer agrees with the quotes" instead of "which answer is better"."""
    from chatbot.engine import GenerationError
    from chatbot.rag import display_while_streaming, evidence_markdown

    arena = Arena(engine, store, rag, config)
    salt = store.session_salt(config.session_salt_env)
    vote_limits = config.vote_limits()
    # What each side looked like on screen (RAG post-processing included), so later turns can
    # redraw earlier ones; bounded, falls back to the stored raw answers.
    displayed: collections.OrderedDict = collections.OrderedDict()
    displayed_lock = threading.Lock()

    def session_of(request: gr.Request | None) -> str:
        raw = getattr(request, "session_hash", None)
        if not raw:
            raise gr.Error("This page has no session; reload it.")
        return hash_session(salt, raw)

    def client_of(request: gr.Request | None) -> str | None:
        """The salted hash of the client address (never the address itself); None when unknown."""
        host = getattr(getattr(request, "client", None), "host", None)
        return hash_client(salt, host) if host else None

    def remember(battle_id: str, texts: tuple[str, str]) -> None:
        with displayed_lock:
            displayed[battle_id] = texts
            while len(displayed) > _DISPLAY_CACHE_SIZE:
                displayed.popitem(last=False)

    def transcript(battle_id: str | None, pending: tuple[str, str] | None = None):
        """Both chat histories of the conversation `battle_id` belongs to, from the store."""
        chats: tuple[list, list] = ([], [])
        if battle_id:
            record = store.battle(battle_id)
            for turn in store.conversation(record.conversation_id) if record else []:
                with displayed_lock:
                    shown = displayed.get(turn.battle_id)
                if turn.battle_id == battle_id and pending is not None:
                    shown = pending
                shown = shown or (turn.answer_a or "", turn.answer_b or "")
                for chat, text in zip(chats, shown):
                    chat += [{"role": "user", "content": turn.question}, {"role": "assistant", "content": text}]
        return list(chats[0]), list(chats[1])

    available = arena.available_models()
    ready = len(available) >= 2
    if ready:
        notice_text = RULES
    else:
        notice_text = (
            RULES + "\n\n**The arena is closed:** it needs at least two models, and "
            f"{len(available)} can battle right now. Train an adapter (`python -m training ...`) "
            "or check `arena.sampling_weights`."
        )
    gr.Markdown(notice_text)
    with gr.Row(equal_height=True):
        chat_a = gr.Chatbot(label="Model A", height=420, sanitize_html=True, render_markdown=True, feedback_options=None)
        chat_b = gr.Chatbot(label="Model B", height=420, sanitize_html=True, render_markdown=True, feedback_options=None)
    reveal = gr.Markdown("")
    with gr.Row():
        vote_buttons = [gr.Button(label, interactive=False) for _, label, _ in VOTE_BUTTONS]
    with gr.Row():
        question = gr.Textbox(
            placeholder="Ask a travel question and press Enter",
            show_label=False,
            max_length=config.max_question_chars,
            scale=5,
            interactive=ready,
        )
        send = gr.Button("Send", variant="primary", scale=1, interactive=ready)
    new_round = gr.Button("🔄 New round")
    battle_state = gr.State(None)  # the battle id only: never a model name

    def buttons(enabled: bool) -> list:
        return [gr.Button(interactive=enabled) for _ in VOTE_BUTTONS]

    def on_send(text: str, battle_id: str | None, request: gr.Request):
        text = (text or "").strip()
        if not text:
            raise gr.Error("Type a question first.")
        if len(text) > config.max_question_chars:
            raise gr.Error(f"Your question is {len(text):,} characters; the limit is {config.max_question_chars:,}.")
        session = session_of(request)
        try:
            battle = arena.start(text, session, previous_battle_id=battle_id, client=client_of(request))
        except NotEnoughModelsError as err:
            raise gr.Error(str(err)) from err
        except (ValueError, GenerationError) as err:
            raise gr.Error(str(err)) from err
        names = (battle.model_a, battle.model_b)
        locked = [gr.Textbox(value="", interactive=False), gr.Button(interactive=False), *buttons(False)]
        history_a, history_b = transcript(battle.battle_id, ("", ""))
        raw = ("", "")
        yield history_a, history_b, battle.battle_id, *locked
        try:
            for text_a, text_b in arena.answer(battle):
                # Shown as in the chat: RAFT markers rendered, never raw (the raw text is kept for display()).
                raw = (text_a, text_b)
                history_a[-1]["content"], history_b[-1]["content"] = map(display_while_streaming, raw)
                yield history_a, history_b, battle.battle_id, *locked
        except (BattleFailed, GenerationError) as err:
            raise gr.Error(_anonymise(str(err), names)) from err
        final = (arena.display(raw[0], battle), arena.display(raw[1], battle))
        remember(battle.battle_id, final)
        history_a[-1]["content"], history_b[-1]["content"] = final
        unlocked = [gr.Textbox(interactive=True), gr.Button(interactive=True), *buttons(True)]
        yield history_a, history_b, battle.battle_id, *unlocked

    send_outputs = [chat_a, chat_b, battle_state, question, send, *vote_buttons]
    send.click(on_send, [question, battle_state], send_outputs, api_name="arena_send")
    question.submit(on_send, [question, battle_state], send_outputs, api_visibility="private")

    def evidence_after_vote(battle_id: str) -> str:
        record = store.battle(battle_id)
        if rag is None or not config.use_retrieval or record is None:
            return ""
        # The same query the battle searched with (a short follow-up takes the previous question along).
        questions = [{"role": "user", "content": turn.question} for turn in store.conversation(record.conversation_id)
                     if turn.turn <= record.turn]
        evidence = rag.evidence_for(rag.retrieval_query(questions))
        return "\n\n" + evidence_markdown(evidence) if evidence else ""

    def make_vote_handler(choice: str):
        def on_vote(battle_id: str | None, request: gr.Request):
            if not battle_id:
                raise gr.Error("There is nothing to vote on yet: ask a question first.")
            session = session_of(request)
            try:
                receipt = store.record_vote(battle_id, choice, session, client=client_of(request), limits=vote_limits)
            except VoteRejected as err:
                raise gr.Error(str(err)) from err
            message = (
                f"**Model A:** `{receipt.model_a}` · **Model B:** `{receipt.model_b}` · "
                f"your vote: {VOTE_WORDS[receipt.vote]}. Press **New round** for another battle."
            ) + evidence_after_vote(battle_id)
            return (
                message,
                gr.Chatbot(label=f"Model A: {receipt.model_a}"),
                gr.Chatbot(label=f"Model B: {receipt.model_b}"),
                gr.Textbox(interactive=False),
                gr.Button(interactive=False),
                *buttons(False),
            )

        return on_vote

    vote_outputs = [reveal, chat_a, chat_b, question, send, *vote_buttons]
    for button, (choice, _, api_name) in zip(vote_buttons, VOTE_BUTTONS):
        button.click(make_vote_handler(choice), [battle_state], vote_outputs, api_name=api_name)

    def on_new_round():
        return (
            gr.Chatbot(value=[], label="Model A"),
            gr.Chatbot(value=[], label="Model B"),
            None,
            "",
            gr.Textbox(value="", interactive=ready),
            gr.Button(interactive=ready),
            *buttons(False),
        )

    new_round.click(
        on_new_round,
        None,
        [chat_a, chat_b, battle_state, reveal, question, send, *vote_buttons],
        api_name="arena_new_round",
    )


def build_leaderboard_tab(store: VoteStore, config: ArenaConfig, tab: gr.Tab | None = None) -> None:
    """Render the leaderboard (table + plots + Refresh). Pass the enclosing `tab` to refresh it
    whenever it is opened; nothing is computed at page build, so the page carries no ratings."""
    from PIL import Image

    lock = threading.Lock()  # matplotlib's pyplot and the shared plot files are not thread-safe

    summary = gr.Markdown("Open this tab or press **Refresh** to compute the ratings.")
    table = gr.Dataframe(headers=Leaderboard.TABLE_HEADERS, interactive=False, wrap=True)
    with gr.Row():
        ratings_plot = gr.Image(label="Ratings with 95% intervals", type="pil", interactive=False)
        heatmap_plot = gr.Image(label="Win rate (row beats column)", type="pil", interactive=False)
    refresh = gr.Button("🔄 Refresh")

    def on_refresh():
        with lock:
            board = leaderboard_from_store(store, config)
            paths = write_plots(board, config.leaderboard_dir)
            images = [Image.open(path).copy() for path in paths]
        text = (
            f"**{board.votes_used}** votes from the arena. {leaderboard_summary(board)} "
            f"Ratings on the Elo scale (mean {config.elo_base:.0f}), with the online Elo (K={config.elo_k:g}) for "
            "comparison; ties and 'both bad' count as half a win each."
        )
        import pandas as pd

        return text, pd.DataFrame(board.table(), columns=Leaderboard.TABLE_HEADERS), images[0], images[1]

    outputs = [summary, table, ratings_plot, heatmap_plot]
    refresh.click(on_refresh, None, outputs, api_name="leaderboard_refresh")
    if tab is not None:
        tab.select(on_refresh, None, outputs, api_visibility="private")
