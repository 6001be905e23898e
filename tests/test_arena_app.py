"""The Arena and Leaderboard tabs on a real Gradio server with the real engine.

A battle is driven through gradio_client (and, marked `browser`, through headless Chromium):
the two model names must not appear in anything the server sends before the vote, and must
appear after it; the vote must land in the store and on the leaderboard.
"""

from __future__ import annotations

import json
import re

import gradio as gr
import httpx
import pytest
from gradio_client import Client

from arena.store import SQLiteVoteStore
from arena.ui import build_arena_tab, build_leaderboard_tab

from tests.conftest import arena_config, serve_blocks


def arena_blocks(engine, store, config) -> gr.Blocks:
    """The Arena and Leaderboard tabs as the app lays them out."""
    with gr.Blocks() as demo:
        with gr.Tab("Arena"):
            build_arena_tab(engine, store, None, config)
        with gr.Tab("Leaderboard") as tab:
            build_leaderboard_tab(store, config, tab=tab)
    return demo


@pytest.fixture(scope="module")
def arena_app(engine, settings, tmp_path_factory, monkeypatch_module):
    home = tmp_path_factory.mktemp("arena-home")
    monkeypatch_module.delenv("WAYFARER_SESSION_SALT", raising=False)
    store = SQLiteVoteStore(home / "votes.sqlite3")
    config = arena_config(
        sampling={"temperature": 0, "max_new_tokens": 12},
        leaderboard_dir=str(home / "leaderboard"),
        bootstrap_rounds=20,
        sampling_weights={"rlhf": 0},  # the corrupt test adapter is not served anyway
    )
    with serve_blocks(arena_blocks(engine, store, config)) as url:
        yield url, store, config


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def mentions(text: str, names) -> list[str]:
    return [n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)]


def text_of(message: dict) -> str:
    content = message["content"]  # Gradio 6 sends content as a list of typed parts
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def same_text(a: str, b: str) -> bool:
    return a.split() == b.split()  # Gradio's Chatbot re-indents message text (inspect.cleandoc)


def without(text: str, *pieces: str) -> str:
    """`text` with the given pieces (generated answers, the question) removed, line by line
    because the Chatbot re-indents multi-line messages."""
    lines = {line.strip() for piece in pieces if piece for line in piece.splitlines()}
    for piece in sorted(filter(None, lines | set(filter(None, pieces))), key=len, reverse=True):
        text = text.replace(json.dumps(piece)[1:-1], "").replace(piece, "")
    return text


def test_battle_is_anonymous_until_the_vote_then_recorded_and_ranked(arena_app, engine):
    url, store, _ = arena_app
    client = Client(url, verbose=False)
    names = engine.adapters  # base, qlora, raft
    page = httpx.get(url + "config").text
    assert not mentions(page, ["qlora", "raft"]), "model names in the page config"

    job = client.submit("Is the Japan Rail Pass worth it?", api_name="/arena_send")
    updates = list(job)  # every streamed output, as the browser would get it
    assert len(updates) >= 3  # locked start, streaming, final unlock
    battle = store.battles()[-1]
    assert battle.finished and battle.answer_a and battle.answer_b
    # Answers are generated text and could contain any word; everything else must not name a model.
    sent = without(json.dumps(updates), battle.answer_a, battle.answer_b, battle.question)
    assert not mentions(sent, names), f"model name leaked before the vote: {mentions(sent, names)}"
    final = updates[-1]
    history_a, history_b = final[0], final[1]
    assert same_text(text_of(history_a[-1]), battle.answer_a) and same_text(text_of(history_b[-1]), battle.answer_b)
    assert battle.model_a != battle.model_b and {battle.model_a, battle.model_b} <= set(names)

    # A follow-up continues with the same pair on the same sides.
    follow_updates = list(client.submit("And for two weeks?", api_name="/arena_send"))
    follow = store.battles()[-1]
    assert follow.turn == 1 and follow.conversation_id == battle.conversation_id
    assert (follow.model_a, follow.model_b) == (battle.model_a, battle.model_b)
    assert len(follow_updates[-1][0]) == 4  # two turns on side A
    sent = without(json.dumps(follow_updates), follow.answer_a, follow.answer_b, battle.answer_a, battle.answer_b, follow.question)
    assert not mentions(sent, names)

    reveal = client.predict(api_name="/arena_vote_b")
    assert f"`{battle.model_a}`" in reveal[0] and f"`{battle.model_b}`" in reveal[0]
    votes = store.votes()
    assert [(v.battle_id, v.vote) for v in votes] == [(follow.battle_id, "model_b")]
    assert votes[0].session_hash == follow.session_hash and len(votes[0].session_hash) == 64

    # The round is locked until New round.
    with pytest.raises(Exception, match="round is over"):
        client.predict("One more?", api_name="/arena_send")
    with pytest.raises(Exception, match="already has a vote"):
        client.predict(api_name="/arena_vote_a")
    client.predict(api_name="/arena_new_round")
    with pytest.raises(Exception, match="nothing to vote on"):
        client.predict(api_name="/arena_vote_a")

    summary, table, *_ = client.predict(api_name="/leaderboard_refresh")
    assert "**1** votes" in summary
    ranked = [row[1] for row in table["data"]]
    assert ranked == [follow.model_b, follow.model_a]  # the winner first


def test_another_session_cannot_vote_on_a_battle_it_did_not_see(arena_app):
    url, store, _ = arena_app
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="nothing to vote on"):
        client.predict(api_name="/arena_vote_tie")
    with pytest.raises(Exception, match="Type a question"):
        client.predict("   ", api_name="/arena_send")


@pytest.mark.browser
def test_browser_page_shows_no_model_name_before_the_vote(arena_app, engine, browser):
    import playwright.sync_api as playwright_api

    url, store, _ = arena_app
    page = browser.new_page()
    page.goto(url)
    page.get_by_placeholder("Ask a travel question").fill("Where should I stay in Lisbon?")
    page.get_by_role("button", name="Send").click()
    vote_a = page.get_by_role("button", name="A is better")
    playwright_api.expect(vote_a).to_be_enabled(timeout=120_000)
    battle = store.battles()[-1]
    html = without(page.content(), battle.answer_a, battle.answer_b, battle.question)
    assert not mentions(html, ["qlora", "raft"]) and "Model A:" not in html
    vote_a.click()
    playwright_api.expect(page.get_by_text(re.compile("your vote: Model A is better"))).to_be_visible(timeout=30_000)
    revealed = page.content()
    assert battle.model_a in revealed and battle.model_b in revealed
    assert store.battle(battle.battle_id).vote == "model_a"


# --------------------------------------------------------------------------------- vote integrity
@pytest.fixture(scope="module")
def guarded_app(engine, tmp_path_factory, monkeypatch_module):
    """The arena with a low hourly vote limit, on its own store (the tests above keep theirs)."""
    home = tmp_path_factory.mktemp("guarded-home")
    store = SQLiteVoteStore(home / "votes.sqlite3")
    config = arena_config(
        sampling={"temperature": 0, "max_new_tokens": 4},
        leaderboard_dir=str(home / "leaderboard"),
        sampling_weights={"rlhf": 0},
        max_votes_per_hour=2,  # an hour: the test never waits on, or races, the window
        abuse_votes=20,
    )
    with serve_blocks(arena_blocks(engine, store, config)) as url:
        yield url, store, config


def test_fresh_sessions_from_one_address_share_its_vote_limit(guarded_app):
    """A script opening a fresh Gradio session per vote is still one client address: the
    address (request.client.host) reaches the store as its salted hash, and the store's limit."""
    from arena.sessions import hash_client

    url, store, config = guarded_app
    salt = store.session_salt(config.session_salt_env)
    outcomes = []
    for i in range(3):
        client = Client(url, verbose=False)  # a new session id, as a vote script would open
        list(client.submit(f"Is Lisbon hilly? ({i})", api_name="/arena_send"))
        try:
            outcomes.append(client.predict(api_name="/arena_vote_a")[0])
        except Exception as err:  # gradio_client raises the gr.Error as an AppError
            outcomes.append(err)
    assert [isinstance(o, str) for o in outcomes] == [True, True, False], outcomes
    assert "too many votes from your network address" in str(outcomes[2])
    votes = store.votes()
    assert len(votes) == 2 and len({v.session_hash for v in votes}) == 2
    assert {v.client_hash for v in votes} == {hash_client(salt, "127.0.0.1")}
    assert all("127.0.0.1" not in repr(b) for b in store.battles())  # only its hash is stored

    # Through a proxy on a trusted address (uvicorn's FORWARDED_ALLOW_IPS; 127.0.0.1 by default)
    # the voter is the address the proxy forwards: another client, with its own limit.
    proxied = Client(url, verbose=False, headers={"X-Forwarded-For": "203.0.113.7"})
    list(proxied.submit("Is Porto hilly?", api_name="/arena_send"))
    proxied.predict(api_name="/arena_vote_b")
    assert store.votes()[-1].client_hash == hash_client(salt, "203.0.113.7")

    summary, table, *_ = Client(url, verbose=False).predict(api_name="/leaderboard_refresh")
    assert "**3** votes" in summary and "Flagged votes: 0" in summary
    assert {row[-1] for row in table["data"]} == {"provisional"}
