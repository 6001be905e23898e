"""The chat in headless Chromium with Reddit sources on: what a traveller sees while an answer
streams and after it, and what 👍 stores.

The answers come from an OpenAI-compatible server (chatbot.remote.RemoteEngine, the vLLM
backend) that streams a scripted RAFT answer whose markers are split across pieces
(`##begin_qu` + `ote##`, `<ANS` + `WER>:`): the small local model only writes markers now and
then, and this test must see every partial state a marker can be in. Everything else is real:
the app, the Chroma index with the real embedder, the evidence, the SQLite vote store.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.conftest import ask_in_chat, home_settings, index_threads, serve_app, serve_asgi, thread_record

QUESTION = "Will small cafes in Lisbon take my card, or should I bring cash?"
ANSWER_PIECES = [
    "Travellers ", "say ", "##begin_qu", "ote## Cards are accepted almost everywhere in Lisbon", " ##end_",
    "quote## and ", "##begin_quote## carry a few euros ##end_quote##", " for tascas. ", "<AN", "SWER>", ": ",
    "Cards work ", "nearly everywhere; ", "keep a few ", "euros in cash.",
]
FINAL_ANSWER = "Cards work nearly everywhere; keep a few euros in cash."
RAW_MARKERS = ("##", "begin_qu", "end_qu", "<ANS", "ANSWER>", "&lt;")
THREADS = [
    thread_record("lx1", "lisbon", "Do I need cash in Lisbon?", "Visiting for a week in May. Are cards accepted in small cafes?",
                  ["Cards are accepted almost everywhere in Lisbon, even in tiny cafes. Carry a few euros for small tascas "
                   "and the tram kiosk though.", "I loved the pasteis de nata at Manteigaria."],
                  created_utc=1_714_000_000),
    thread_record("lx2", "JapanTravel", "Narita airport to Shinjuku cheapest option?", "Landing at 6pm with a suitcase.",
                  ["Take the Keisei Access Express and change at Nippori; it costs about 1,300 yen."]),
]


def _scripted_openai_server():
    """A minimal OpenAI-compatible server: /v1/models and a streamed /v1/chat/completions."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": "base", "object": "model"}]})

    async def completions(request):
        body = await request.json()
        assert body["stream"] is True

        async def events():
            for piece in ANSWER_PIECES:
                await asyncio.sleep(0.25)  # slow enough that the browser renders every partial state
                yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': piece}}]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", completions, methods=["POST"])])


@pytest.fixture(scope="module")
def server_url():
    with serve_asgi(_scripted_openai_server(), "the scripted server") as url:
        yield f"{url}/v1"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return home_settings(tmp_path_factory, "chat-browser")


@pytest.fixture(scope="module")
def app(settings, server_url):
    from arena.store import SQLiteVoteStore
    from chatbot.rag import RagChat
    from chatbot.remote import InferenceConfig, RemoteEngine
    from chatbot.sampling import SamplingConfig

    index_threads(settings, THREADS)
    engine = RemoteEngine(server_url, ["base"], system_prompt="You are Wayfarer.", sampling=SamplingConfig.from_settings(settings),
                          timeout_s=InferenceConfig.from_settings(settings).timeout_s)
    rag = RagChat.from_settings(engine, settings)
    assert rag.retrieval_available
    store = SQLiteVoteStore(settings.path("votes"))
    with serve_app(settings, engine, rag=rag, votes=store) as url:
        yield url, store
    engine.close()


@pytest.mark.browser
def test_a_traveller_sees_clean_streaming_then_evidence_with_permalinks_and_can_like_it(app, browser):
    url, store = app
    page = browser.new_page()
    page.goto(url)
    # Every text the bot message ever shows, recorded on each DOM change while it streams.
    page.evaluate(
        """() => {
            window.__seen = [];
            new MutationObserver(() => {
                const bots = document.querySelectorAll(".message.bot, [data-testid='bot']");
                if (bots.length) window.__seen.push(bots[bots.length - 1].innerText);
            }).observe(document.body, {subtree: true, childList: true, characterData: true});
        }"""
    )
    ask_in_chat(page, QUESTION)
    # Poll as well: the DOM is read every 100 ms until the evidence block is there.
    polled = []
    deadline = time.monotonic() + 120
    bot = page.locator(".message.bot, [data-testid='bot']").last
    while time.monotonic() < deadline:
        page.wait_for_timeout(100)
        if page.locator(".message.bot, [data-testid='bot']").count():
            polled.append(bot.inner_text())
            if "What travellers said" in polled[-1]:
                break
    seen = page.evaluate("window.__seen") + polled
    streamed = [text for text in seen if text.strip() and "What travellers said" not in text]
    assert len(set(streamed)) > 3, f"the answer did not stream: {streamed}"
    assert any("“" in text for text in streamed), "quote markers were not rendered as quotes while streaming"
    for text in seen:
        for marker in RAW_MARKERS:
            assert marker not in text, f"raw marker {marker!r} showed: {text!r}"

    final = bot.inner_text()
    assert FINAL_ANSWER in final and "What travellers said" in final
    assert "Cards are accepted almost everywhere in Lisbon, even in tiny cafes." in final
    assert "▲ 10" in final and "r/lisbon" in final and "2024-04-24" in final
    # The evidence links go to the very reply, on reddit.com, and open outside the app.
    reply_link = "https://www.reddit.com/r/lisbon/comments/lx1/x/clx10/"
    links = bot.locator(f"a[href='{reply_link}']")
    assert links.count() >= 1
    assert links.first.inner_text() == "reply on Reddit"
    assert links.first.get_attribute("target") == "_blank"
    assert bot.locator("a[href^='javascript']").count() == 0

    # 👍 is stored with the prompt the model answered (documents included), session hashed.
    bot.hover()
    page.get_by_role("button", name="Like", exact=True).last.click()
    deadline = time.monotonic() + 30
    while not store.chat_feedback() and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    (feedback,) = store.chat_feedback()
    assert feedback.liked is True and feedback.model == "base"
    assert feedback.completion == FINAL_ANSWER
    assert "<DOCUMENT" in feedback.prompt[-1]["content"] and QUESTION in feedback.prompt[-1]["content"]
    assert all(m["role"] != "system" for m in feedback.prompt)
    assert len(feedback.session_hash) == 64
