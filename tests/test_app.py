"""The Gradio app, served for real and reached through gradio_client and headless Chromium."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ask_in_chat, serve_app

QUESTION = "Any tips for a first trip to Tokyo?"
LONG_QUESTION = "Write a detailed packing list for two weeks of backpacking in Vietnam in the rainy season."


@pytest.fixture(scope="module")
def app_url(settings, engine):
    with serve_app(settings, engine) as url:
        yield url


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
def test_a_traveler_sees_the_answer_stream_in_the_browser(app_url, browser):
    page = browser.new_page()
    page.goto(app_url)
    # Record the bot message's length on every DOM change, so no streamed update is
    # missed however fast the small model answers.
    page.evaluate(
        """() => {
            window.__lengths = [];
            new MutationObserver(() => {
                const bots = document.querySelectorAll(".message.bot, [data-testid='bot']");
                const text = bots.length ? bots[bots.length - 1].innerText.trim() : "";
                if (text && text !== "Loading content") window.__lengths.push(text.length);
            }).observe(document.body, {subtree: true, childList: true, characterData: true});
        }"""
    )
    # The base model: the test adapters are random and may stop after a word or two.
    ask_in_chat(page, LONG_QUESTION)
    # Done when the answer has stopped changing for a few seconds.
    deadline, seen, stable_since = time.monotonic() + 120, 0, time.monotonic()
    while time.monotonic() < deadline:
        page.wait_for_timeout(250)
        count = page.evaluate("window.__lengths.length")
        if count != seen:
            seen, stable_since = count, time.monotonic()
        elif seen and time.monotonic() - stable_since > 4:
            break
    lengths = page.evaluate("window.__lengths")
    assert lengths and lengths[-1] > 0, "no answer appeared"
    distinct = sorted(set(n for n in lengths if n > 0))
    final = page.locator(".message.bot, [data-testid='bot']").last.inner_text()
    assert len(distinct) > 1, f"the answer did not stream (lengths seen: {distinct}, answer {final!r})"
    assert page.get_by_text(LONG_QUESTION).count() >= 1
