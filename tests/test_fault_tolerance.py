"""Fault tolerance: a killed process loses no acknowledged vote, a failing generation does not
take the app down, bad input is refused, and text from users or Reddit is shown, never run.

Everything is real: the vote store (SQLite, and PostgreSQL on a real local server) in a
subprocess killed with SIGKILL, the 4-bit model, a served Gradio app reached through
gradio_client and headless Chromium.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, serve_app

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Any tips for a first trip to Tokyo?"
XSS_IMG = '<img src=x onerror="window.__xss=1">'
XSS_SCRIPT = "<script>window.__xss=1</script>"


# ----------------------------------------------------------------------------- kill -9 during votes
def _start_burst(votes_path: Path, count: int = 0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "vote_burst.py"), str(votes_path), str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def _read_acknowledged(process: subprocess.Popen, at_least: int, timeout_s: float = 60) -> list[str]:
    """Lines of acknowledged votes read until `at_least` arrived (the process keeps voting)."""
    lines = []
    deadline = time.monotonic() + timeout_s
    assert process.stdout.readline().strip() == "ready"
    while len(lines) < at_least:
        assert time.monotonic() < deadline, f"only {len(lines)} votes in {timeout_s} s"
        line = process.stdout.readline()
        assert line, f"the burst ended early: {process.stderr.read()}"
        lines.append(line)
    return lines


def _votes_per_battle_after_the_kill(backend: str, votes_path: Path, dsn: str | None) -> dict[str, int]:
    """Reopen the store the killed process wrote, check its integrity, count votes per battle."""
    if backend == "sqlite":
        from arena.store import SQLiteVoteStore

        SQLiteVoteStore(votes_path)  # reopening recovers the WAL left by the killed writer
        conn = sqlite3.connect(votes_path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            return dict(conn.execute("SELECT battle_id, COUNT(*) FROM votes GROUP BY battle_id").fetchall())
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        orphans = conn.execute(
            "SELECT COUNT(*) FROM votes v LEFT JOIN battles b ON b.battle_id = v.battle_id WHERE b.battle_id IS NULL"
        ).fetchone()[0]
        assert orphans == 0
        return dict(conn.execute("SELECT battle_id, COUNT(*) FROM votes GROUP BY battle_id").fetchall())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_votes_acknowledged_before_a_kill_9_survive_and_voting_continues(backend, tmp_path, request, monkeypatch):
    from arena.store import open_vote_store
    from settings import load_settings

    votes_path = tmp_path / "votes.sqlite3"
    # The backend is chosen by configuration, here and in the burst process (which inherits it).
    monkeypatch.setenv("WAYFARER__ARENA__VOTE_STORE", backend)
    monkeypatch.delenv("WAYFARER__ARENA__POSTGRES_DSN_ENV", raising=False)
    dsn = None
    if backend == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")  # a fresh database on the test server
        monkeypatch.setenv("WAYFARER_VOTES_DSN", dsn)

    def reopened():
        return open_vote_store(load_settings(overrides={"paths": {"votes": str(votes_path)}}))

    burst = _start_burst(votes_path)
    try:
        acknowledged = _read_acknowledged(burst, at_least=40)
        # Kill mid-burst: the process is inside a transaction (or about to be) right now.
        burst.send_signal(signal.SIGKILL)
        burst.wait(timeout=30)
    finally:
        if burst.poll() is None:
            burst.kill()
    assert burst.returncode == -signal.SIGKILL
    # Lines it printed before dying but after our last read are acknowledged too.
    acknowledged += burst.stdout.read().splitlines(keepends=True)
    complete = [line.split() for line in acknowledged if line.endswith("\n")]
    assert len(complete) >= 40

    counts = _votes_per_battle_after_the_kill(backend, votes_path, dsn)
    store = reopened()
    try:
        stored = {row.battle_id: row.vote for row in store.votes()}
    finally:
        store.close()
    for battle_id, vote in complete:
        assert counts.get(battle_id) == 1, f"acknowledged vote on {battle_id} is missing or duplicated"
        assert stored[battle_id] == vote
    # At most the one vote in flight at the kill may be stored without having been acknowledged.
    assert len(stored) - len(complete) in (0, 1)
    if backend == "postgres":
        assert not votes_path.exists()  # the votes went to the server, not to a file

    # A restarted writer goes on voting in the same store.
    restarted = _start_burst(votes_path, count=5)
    out, err = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, err
    new_ids = [line.split()[0] for line in out.splitlines()[1:]]
    assert len(new_ids) == 5
    store = reopened()
    try:
        after = {row.battle_id for row in store.votes()}
    finally:
        store.close()
    assert set(new_ids) <= after and set(stored) <= after
    assert len(after) == len(stored) + 5


# ----------------------------------------------------------------------------- failing generations
@pytest.mark.parametrize(
    "bad_sampling",
    [
        {"temperature": 0.7, "top_k": -1},  # passes our validation, transformers refuses it inside generate
        {"temperature": float("nan")},  # NaN slips through `temperature < 0`
        {"repetition_penalty": -1.0},
    ],
    ids=["negative-top-k", "nan-temperature", "negative-repetition-penalty"],
)
def test_a_generation_that_crashes_in_the_worker_does_not_stop_the_engine(engine, bad_sampling):
    from chatbot import GenerationError

    messages = [{"role": "user", "content": QUESTION}]
    with pytest.raises(GenerationError, match="generation failed"):
        engine.complete(messages, "qlora", max_new_tokens=4, **bad_sampling)
    # The batched arena path fails the same way, for both rows, and frees the model too.
    with pytest.raises(GenerationError, match="generation failed"):
        engine.complete_rows([(messages, "base"), (messages, "raft")], max_new_tokens=4, **bad_sampling)
    # The next requests are answered, on every adapter, as if nothing had happened.
    answers = engine.complete_rows([(messages, "base"), (messages, "qlora")], temperature=0, max_new_tokens=6)
    assert all(answer.strip() for answer in answers)
    assert engine.complete(messages, "raft", temperature=0, max_new_tokens=6).strip()


def test_an_abandoned_stream_frees_the_model_for_the_next_request(engine):
    """Stop ends the generation: the next request is answered, and the abandoned row is not
    decoded to its 200 tokens (counted in decode steps, not timed)."""
    messages = [{"role": "user", "content": QUESTION}]
    before = engine.stats.steps
    stream = engine.generate(messages, "base", temperature=0, max_new_tokens=200)
    next(stream)  # the user presses Stop after the first piece
    stream.close()
    assert engine.complete(messages, "qlora", temperature=0, max_new_tokens=4).strip()
    deadline = time.monotonic() + 600  # a hang guard only: idle comes after a few steps
    while engine.running_rows:
        assert time.monotonic() < deadline, "the engine never went idle"
        time.sleep(0.05)
    assert engine.stats.steps - before < 150, "the abandoned row was decoded to its end"


# ----------------------------------------------------------------------------- the served app
@pytest.fixture(scope="module")
def app_url(settings, engine):
    with serve_app(settings, engine) as url:
        yield url


def _requests_queued(engine) -> int:
    return engine.stats.requests  # generation requests the engine has ever received


def test_oversized_input_is_refused_with_a_message_and_nothing_is_generated(app_url, engine, settings):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    limit = settings.config.ui.max_message_chars
    client = Client(app_url, verbose=False)
    before = _requests_queued(engine)
    with pytest.raises(AppError, match=f"limit is {limit:,}"):
        client.predict("x" * 100_000, "base", 0.0, 16, api_name="/chat")
    assert _requests_queued(engine) == before
    assert client.predict(QUESTION, "base", 0.0, 16, api_name="/chat").strip()


@pytest.mark.parametrize("empty", ["", "   \n\t "])
def test_empty_input_does_nothing(app_url, engine, empty):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    before = _requests_queued(engine)
    assert client.predict(empty, "base", 0.0, 16, api_name="/chat") in ("", None)
    assert _requests_queued(engine) == before


def _launch_chromium(playwright):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    return playwright.chromium.launch(
        executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    )


def _wait_until_answered(page, timeout_s: float = 120) -> None:
    bot = page.locator("[data-testid='bot']")
    # By role, so the page footer's hidden "Stop Recording" button does not count as generating.
    stop = page.get_by_role("button", name="Stop", exact=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if bot.count() and stop.count() == 0 and bot.last.inner_text().strip():
            return
        page.wait_for_timeout(100)
    raise AssertionError("no answer appeared")


@pytest.mark.browser
@pytest.mark.parametrize("payload", [XSS_IMG, XSS_SCRIPT], ids=["img-onerror", "script"])
def test_html_and_script_from_a_user_are_shown_as_text_not_run(app_url, payload):
    from playwright.sync_api import sync_playwright

    message = f"Is this safe? {payload}"
    with sync_playwright() as playwright:
        browser = _launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.goto(app_url)
            box = page.get_by_placeholder("Ask about a destination, transport, costs, visas...")
            box.fill(message)
            box.press("Enter")
            _wait_until_answered(page)
            page.wait_for_timeout(500)  # an injected <img> would have fired onerror by now
            assert page.evaluate("typeof window.__xss") == "undefined"
            user = page.locator("[data-testid='user']").last
            assert payload in user.inner_text(), f"the message is not shown literally: {user.inner_text()!r}"
            assert page.locator("[data-testid='user'] img, [data-testid='user'] script").count() == 0
        finally:
            browser.close()


@pytest.mark.browser
def test_a_reddit_post_with_script_is_shown_escaped_in_the_sources(engine, settings):
    """RagChat.postprocess output rendered by the same Chatbot the Chat tab uses."""
    import gradio as gr
    from playwright.sync_api import sync_playwright

    from chatbot.rag import RagChat
    from raft import Document

    title = f"Tokyo tips {XSS_SCRIPT} {XSS_IMG}"
    document = Document(
        doc_id="xs1-0",
        text=f"{title}\n\nTake the Yamanote line. {XSS_IMG}",
        title=title,
        subreddit="JapanTravel",
        permalink="https://www.reddit.com/r/JapanTravel/comments/xs1/x/",
    )
    answer = f"Take the Yamanote line. {XSS_SCRIPT}"
    rendered = RagChat.from_settings(engine, settings, retrieval=False).postprocess(answer, [document]).display_markdown
    assert "<script>" not in rendered and "<img" not in rendered

    history = [{"role": "user", "content": "Tokyo?"}, {"role": "assistant", "content": rendered}]
    with gr.Blocks() as demo:
        gr.Chatbot(value=history, label="Wayfarer", sanitize_html=True, render_markdown=True)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = _launch_chromium(playwright)
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{port}/")
                bot = page.locator("[data-testid='bot']").last
                bot.wait_for(timeout=30_000)
                page.wait_for_timeout(500)
                assert page.evaluate("typeof window.__xss") == "undefined"
                shown = bot.inner_text()
                assert XSS_SCRIPT in shown and XSS_IMG in shown, shown
                assert bot.locator("script, img[src='x']").count() == 0
            finally:
                browser.close()
    finally:
        demo.close()
