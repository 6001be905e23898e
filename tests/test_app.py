"""The Gradio app, served for real and reached through gradio_client and headless Chromium."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.conftest import free_port

QUESTION = "Any tips for a first trip to Tokyo?"


@pytest.fixture(scope="module")
def app_url(settings, engine):
    from app import build_app

    demo = build_app(settings, engine)
    demo.queue(default_concurrency_limit=4)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_the_chat_endpoint_answers_through_gradio_client(app_url, engine):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    answer = client.predict(QUESTION, "qlora", 0.0, 16, False, api_name="/chat")
    expected = engine.complete([{"role": "user", "content": QUESTION}], "qlora", temperature=0, max_new_tokens=16)
    assert answer.strip() == expected.strip()


def test_the_chat_endpoint_streams_growing_partial_answers(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    job = client.submit(QUESTION, "base", 0.0, 24, False, api_name="/chat")
    partials = [update for update in job]
    assert len(partials) > 1
    assert all(later.startswith(earlier) for earlier, later in zip(partials, partials[1:]))
    assert partials[-1] == job.result()


def test_bad_requests_get_messages_not_crashes(app_url):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app_url, verbose=False)
    with pytest.raises(AppError, match="limit is 4,000"):
        client.predict("x" * 100_000, "base", 0.0, 16, False, api_name="/chat")
    with pytest.raises(AppError, match="rlhf is not in the list of choices"):
        client.predict(QUESTION, "rlhf", 0.0, 16, False, api_name="/chat")
    # The app still answers after refusing.
    assert client.predict(QUESTION, "base", 0.0, 16, False, api_name="/chat").strip()


@pytest.mark.browser
def test_a_traveler_sees_the_answer_stream_in_the_browser(app_url):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page()
            page.goto(app_url)
            box = page.get_by_placeholder("Ask about a destination, transport, costs, visas...")
            box.fill(QUESTION)
            box.press("Enter")
            bot = page.locator(".message.bot, [data-testid='bot']").last
            lengths = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if bot.count():
                    lengths.append(len(bot.inner_text().strip()))
                if page.get_by_role("button", name="Stop", exact=True).count() == 0 and lengths and lengths[-1] > 0:
                    break
                page.wait_for_timeout(100)
            assert lengths and lengths[-1] > 0, "no answer appeared"
            distinct = sorted(set(n for n in lengths if n > 0))
            assert len(distinct) > 1, f"the answer did not stream (lengths seen: {distinct})"
            assert page.get_by_text(QUESTION).count() >= 1
        finally:
            browser.close()
