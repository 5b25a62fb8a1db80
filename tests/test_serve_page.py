"""The chat page in a real headless browser: Debian's chromium driven by Playwright (no browser download).

It loads with nothing fetched from anywhere but the server, a message gets a streamed answer with tokens/s shown,
the conversation is kept for the next turn, and the stop button stops a long reply (freeing its slot on the server).
A screenshot goes to the test's tmp directory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_fixtures import API_KEY, Server, server, tiny_checkpoint  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield launched
        launched.close()


def test_chat_page_streams_keeps_the_conversation_and_stops(browser, server: Server, tmp_path: Path) -> None:  # noqa: F811
    page = browser.new_page()
    elsewhere: list[str] = []

    def only_the_server(route) -> None:  # the page must work offline: nothing but the server is fetched
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    page.goto(server.url + "/")
    assert page.title() == "tinyllm chat"
    page.fill("#api-key", API_KEY)
    page.dispatch_event("#api-key", "change")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "20")

    page.fill("#input", "Hello, who are you?")
    page.click("#send")
    page.wait_for_function("document.querySelector('#stats').textContent.includes('finished: length')", timeout=30000)
    first_reply = page.locator(".msg.assistant .content").first.text_content()
    assert first_reply and "tokens/s" in page.text_content("#stats")

    page.fill("#input", "Tell me more.")  # a second turn: the first stays on the page and in the request
    page.press("#input", "Enter")
    page.wait_for_function("document.querySelectorAll('.msg.assistant').length == 2 && "
                           "document.querySelector('#stats').textContent.includes('finished')", timeout=30000)
    assert page.locator(".msg.user").count() == 2
    assert page.locator(".msg.assistant .content").first.text_content() == first_reply

    page.screenshot(path=str(tmp_path / "chat_page_two_turns.png"))
    page.click("#new-chat")  # a fresh conversation, so a long reply fits the context
    assert page.locator(".msg").count() == 0
    page.fill("#max-tokens", "1800")  # a long reply (seconds), stopped as soon as it is streaming
    page.fill("#input", "Now a very long story, please.")
    page.click("#send")
    page.wait_for_function("document.querySelectorAll('.msg.assistant').length == 1 && "
                           "document.querySelector('.msg.assistant .content').textContent.length > 0",
                           timeout=30000)
    page.click("#stop", timeout=5000)
    page.wait_for_function("document.querySelector('#stats').textContent.includes('stopped')", timeout=10000)
    stopped_text = page.locator(".msg.assistant .content").first.text_content()
    time.sleep(0.5)
    assert page.locator(".msg.assistant .content").first.text_content() == stopped_text  # nothing more arrives
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    deadline = time.monotonic() + 10
    while server.health()["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.health()["active"] == 0 and server.health()["cache_rows_in_use"] == 0  # the slot is free
    int(page.text_content("#stats").split(" tokens")[0])  # "N tokens, R tokens/s, ..."

    page.screenshot(path=str(tmp_path / "chat_page.png"), full_page=True)
    assert (tmp_path / "chat_page.png").stat().st_size > 1000
    assert elsewhere == []
    page.close()
