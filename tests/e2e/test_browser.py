"""The chat page in a real browser (Debian's Chromium, driven by Playwright), live server."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, ServerFactory

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("GUEST_TEST_ARTIFACTS", ROOT / "artifacts"))

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
if not Path(CHROMIUM).exists():
    if os.environ.get("GUEST_TEST_REQUIRE_SERVICES"):
        raise RuntimeError("Chromium is required in CI but /usr/bin/chromium is missing")
    pytest.skip("no Chromium found (apt-get install chromium)", allow_module_level=True)

expect = playwright_api.expect
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    contexts = []

    def make(locale: str = "en-US") -> Any:
        context = browser.new_context(locale=locale, viewport={"width": 900, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.on("dialog", lambda d: pytest.fail(f"a dialog opened: {d.message}"))
        return page

    yield make
    for context in contexts:
        context.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def start_server(start_server: ServerFactory) -> ServerFactory:
    """Servers in DEBUG mode, so that they serve the page's static files themselves."""

    def start(kind: str = "uvicorn", **env: str) -> Any:
        return start_server(kind, DEBUG="true", **env)

    return start


def ask(page: Any, question: str) -> None:
    page.get_by_label("Your question").fill(question)
    page.keyboard.press("Enter")


def test_question_streams_an_answer_and_suggestions_ask_again(
    start_server: ServerFactory, new_page: Any
) -> None:
    server = start_server(
        GUEST_WORKFLOW="guest_queue.workflows.demo.DemoWorkflow", GUEST_DEMO_TOKEN_DELAY_SEC="0.01"
    )
    page = new_page()
    page.goto(server.url)
    ask(page, "What is DNA?")
    send = page.get_by_role("button", name="Send")
    expect(send).to_be_disabled()
    answer = page.locator(".gq-turn").last.locator(".gq-body")
    expect(answer).to_contain_text("DNA (deoxyribonucleic acid)")
    suggestions = page.locator(".gq-turn").last.locator(".gq-suggestion")
    expect(suggestions).to_have_count(3, timeout=15000)
    expect(send).to_be_enabled()
    expect(page.locator("#gq-queue")).to_contain_text("answering")
    shot(page, "chat-answered")
    first = suggestions.first.inner_text()
    suggestions.first.click()
    expect(page.locator(".gq-turn")).to_have_count(2)
    expect(page.locator(".gq-turn").last.locator(".gq-question")).to_contain_text(first)
    expect(page.locator(".gq-turn").last.locator(".gq-suggestion")).to_have_count(3, timeout=15000)


def test_second_guest_sees_the_line_then_the_answer(
    start_server: ServerFactory, new_page: Any
) -> None:
    server = start_server(GUEST_MAX_CONCURRENT_REQUESTS="1")
    first, second = new_page(), new_page()
    first.goto(server.url)
    second.goto(server.url)
    ask(first, "sleep=2 chunks=2")
    expect(first.locator(".gq-status").last).to_have_text("Writing an answer…")
    ask(second, "chunks=3")
    status = second.locator(".gq-status").last
    expect(status).to_have_text(re.compile("next in line|number 1 in line"))
    shot(second, "chat-waiting")
    expect(second.locator(".gq-body").last).to_have_text("chunk0 chunk1 chunk2", timeout=15000)


def test_stop_frees_the_slot_for_the_next_question(
    start_server: ServerFactory, new_page: Any
) -> None:
    server = start_server(GUEST_MAX_CONCURRENT_REQUESTS="1")
    page = new_page()
    page.goto(server.url)
    ask(page, "sleep=60 chunks=1")
    expect(page.locator(".gq-status").last).to_have_text("Writing an answer…")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".gq-status").last).to_have_text("Stopped.")
    expect(page.locator(".gq-retry")).to_have_count(1)
    started = time.monotonic()
    ask(page, "chunks=2")
    expect(page.locator(".gq-body").last).to_have_text("chunk0 chunk1", timeout=5000)
    assert time.monotonic() - started < 5  # the stopped request's slot was freed at once


def test_markup_in_an_answer_is_shown_as_text(start_server: ServerFactory, new_page: Any) -> None:
    server = start_server()
    page = new_page()
    page.goto(server.url)
    # Markup that, if the page ever parsed it, would set window.__pwned__.
    hostile = (
        "<img src=x onerror=window.__pwned__=1> <script>window.__pwned__=2</script> <b>bold</b>"
    )
    ask(page, f"echo: {hostile}")
    body = page.locator(".gq-body").last
    expect(body).to_have_text(hostile)
    assert body.locator("img, script, b").count() == 0
    question = page.locator(".gq-question").last
    assert question.locator("img, script, b").count() == 0
    page.wait_for_timeout(300)  # an image error handler would have run by now
    assert page.evaluate("window.__pwned__") is None
    # The probe itself works: the same text parsed as HTML sets the flag.
    page.evaluate("h => { document.body.insertAdjacentHTML('beforeend', h); }", hostile)
    page.wait_for_function("window.__pwned__ === 1", timeout=5000)


def test_lists_and_paragraphs_are_formatted_safely(
    start_server: ServerFactory, new_page: Any
) -> None:
    server = start_server(GUEST_WORKFLOW="guest_queue.workflows.demo.DemoWorkflow")
    page = new_page()
    page.goto(server.url)
    page.evaluate(
        """async () => {
            const { renderText } = await import('/static/guest_queue/chat.js');
            const box = document.createElement('div');
            box.id = 'probe';
            document.body.append(box);
            renderText(box, 'Intro <i>x</i>\\n\\n- one\\n- two\\n\\n1. first\\n2. second');
        }"""
    )
    probe = page.locator("#probe")
    expect(probe.locator("p")).to_have_text("Intro <i>x</i>")
    expect(probe.locator("ul > li")).to_have_text(["one", "two"])
    expect(probe.locator("ol > li")).to_have_text(["first", "second"])
    assert probe.locator("i").count() == 0


def test_busy_server_counts_down_and_retries(start_server: ServerFactory, new_page: Any) -> None:
    server = start_server(GUEST_MAX_CONCURRENT_REQUESTS="1", GUEST_MAX_QUEUE_SIZE="0")
    first, second = new_page(), new_page()
    first.goto(server.url)
    second.goto(server.url)
    ask(first, "sleep=2 chunks=1")
    expect(first.locator(".gq-status").last).to_have_text("Writing an answer…")
    ask(second, "chunks=2")
    status = second.locator(".gq-status").last
    expect(status).to_contain_text(re.compile(r"Retrying in \d+ s"))
    shot(second, "chat-busy")
    expect(second.locator(".gq-body").last).to_have_text("chunk0 chunk1", timeout=20000)


def test_timeout_shows_the_fallback(start_server: ServerFactory, new_page: Any) -> None:
    server = start_server(GUEST_REQUEST_TIMEOUT_SEC="1", GUEST_TIMEOUT_FALLBACK="Please try later.")
    page = new_page()
    page.goto(server.url)
    ask(page, "sleep=10")
    expect(page.locator(".gq-body").last).to_have_text("Please try later.", timeout=10000)
    expect(page.locator(".gq-status").last).to_contain_text("took too long")
    shot(page, "chat-timeout")


def test_workflow_error_offers_a_retry(start_server: ServerFactory, new_page: Any) -> None:
    server = start_server()
    page = new_page()
    page.goto(server.url)
    ask(page, "fail=workflow_error")
    expect(page.locator(".gq-status").last).to_contain_text("The scripted workflow failed.")
    page.locator(".gq-retry").click()
    expect(page.locator(".gq-turn")).to_have_count(1)
    expect(page.locator(".gq-status").last).to_contain_text("The scripted workflow failed.")


def test_vietnamese_interface(start_server: ServerFactory, new_page: Any) -> None:
    server = start_server(
        GUEST_WORKFLOW="guest_queue.workflows.demo.DemoWorkflow", GUEST_DEMO_TOKEN_DELAY_SEC="0"
    )
    page = new_page(locale="vi-VN")
    page.goto(server.url)
    expect(page.locator("html")).to_have_attribute("lang", "vi")
    expect(page.get_by_role("button", name="Gửi")).to_be_visible()
    page.get_by_label("Câu hỏi của bạn").fill("Xét nghiệm gen là gì?")
    page.keyboard.press("Enter")
    expect(page.locator(".gq-body").last).to_contain_text("định kiểu gen")
    expect(page.locator(".gq-suggested-label")).to_have_text("Bạn cũng có thể hỏi:")
    shot(page, "chat-vietnamese")
    page.get_by_label("Ngôn ngữ").select_option("en")
    expect(page.get_by_role("button", name="Send")).to_be_visible()


def test_queue_widget_agrees_with_the_guests_own_place(
    start_server: ServerFactory, new_page: Any
) -> None:
    # Polls come every 5 s: each check below must hold well before the next one.
    server = start_server(GUEST_MAX_CONCURRENT_REQUESTS="1")
    first, second = new_page(), new_page()
    first.goto(server.url)
    second.goto(server.url)
    widget = second.locator("#gq-queue")
    expect(widget).to_have_text("0 answering · 0 waiting")
    ask(first, "sleep=4 chunks=1")
    expect(first.locator(".gq-status").last).to_have_text("Writing an answer…")
    expect(first.locator("#gq-queue")).to_have_text("1 answering · 0 waiting", timeout=1500)
    ask(second, "chunks=1")
    expect(second.locator(".gq-status").last).to_have_text(
        re.compile("next in line|number 1 in line")
    )
    expect(widget).to_have_text("1 answering · 1 waiting", timeout=1500)
    shot(second, "chat-queue-widget")
    expect(second.locator(".gq-body").last).to_have_text("chunk0", timeout=15000)
    expect(widget).to_have_text("0 answering · 0 waiting", timeout=1500)
