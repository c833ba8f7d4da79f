"""The chat page in a real browser (Debian's Chromium, driven by Playwright), live server."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..services import missing
from .conftest import ROOT, ServerFactory
from .netcut import NetCut

# Under pytest-xdist (make test: --dist loadgroup) one worker runs them all, with one Chromium.
pytestmark = pytest.mark.xdist_group("browser")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("GUEST_TEST_ARTIFACTS", ROOT / "artifacts"))

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")

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


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    """Each test skips (fails in CI) without Chromium, before it starts a server."""
    if not Path(CHROMIUM).exists():
        missing("Chromium", f"no Chromium at {CHROMIUM} (apt-get install chromium)")


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


def test_the_page_loads_without_a_failed_request_or_console_error(
    start_server: ServerFactory, new_page: Any
) -> None:
    server = start_server()
    page = new_page()
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("requestfailed", lambda r: failed.append(f"failed {r.url}"))
    page.on("console", lambda m: failed.append(m.text) if m.type == "error" else None)
    page.goto(server.url, wait_until="networkidle")
    ask(page, "chunks=2")
    expect(page.locator(".gq-body").last).to_have_text("chunk0 chunk1")
    page.wait_for_load_state("networkidle")
    assert failed == [], failed  # e.g. "404 /favicon.ico" without the page's icon link


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


# Holds back the body of the first POST chat until window.__release is set: the
# request is accepted by the server, but the page has no event (no request id) yet.
HOLD_FIRST_EVENT = """
const realFetch = window.fetch;
window.fetch = async (url, init) => {
  const response = await realFetch(url, init);
  if (init?.method !== "POST" || !String(url).endsWith("/chat") || window.__held) return response;
  window.__held = true;
  const reader = response.body.getReader();
  const body = new ReadableStream({
    async pull(controller) {
      while (!window.__release) await new Promise((resolve) => setTimeout(resolve, 20));
      const { done, value } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
  return new Response(body, { status: response.status, headers: response.headers });
};
"""


def test_stop_before_the_first_event_cancels_once_the_id_is_known(
    start_server: ServerFactory, new_page: Any
) -> None:
    server = start_server(GUEST_MAX_CONCURRENT_REQUESTS="1")
    page = new_page()
    page.add_init_script(HOLD_FIRST_EVENT)
    page.goto(server.url)
    ask(page, "sleep=60 chunks=1")
    page.wait_for_function("window.__held === true", timeout=5000)  # accepted, no event shown
    page.get_by_role("button", name="Stop").click()
    page.evaluate("window.__release = true")
    expect(page.locator(".gq-status").last).to_have_text("Stopped.")
    started = time.monotonic()
    ask(page, "chunks=2")
    # Had the Stop been lost, the resumable request would hold the only slot for 60 s.
    expect(page.locator(".gq-body").last).to_have_text("chunk0 chunk1", timeout=5000)
    assert time.monotonic() - started < 5


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


EVENT_SOURCE_SCRIPT = """async () => {
  const response = await fetch('/api/v1/guest/chat', {
    method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({query: 'chunks=30 delay=0.1', resumable: true}),
  });
  const reader = response.body.getReader();
  const {value} = await reader.read();
  const first = JSON.parse(new TextDecoder().decode(value).split('\\n')[0].slice(6));
  reader.cancel();  // the POST connection goes; the request lives on
  window.got = [first];
  window.opens = 0;
  const source = new EventSource(
    `/api/v1/guest/chat/${first.request_id}/events?after=${first.seq}`);
  source.onopen = () => { window.opens += 1; };
  source.onmessage = (m) => {
    const event = JSON.parse(m.data);
    window.got.push(event);
    if (['workflow_complete', 'error', 'timeout'].includes(event.event)) source.close();
  };
}"""


def test_event_source_resumes_by_itself_when_the_network_drops(
    start_server: ServerFactory, new_page: Any
) -> None:
    server = start_server(GUEST_RESUME_GRACE_SEC="30")
    relay = NetCut(server.port)
    page = new_page()
    page.goto(relay.url)
    page.evaluate(EVENT_SOURCE_SCRIPT)
    page.wait_for_function("window.got.filter(e => e.event === 'answer_chunk').length >= 3")
    # The network drops: offline, and the open stream broken (offline alone leaves it be).
    page.context.set_offline(True)
    relay.cut()
    time.sleep(1)
    page.context.set_offline(False)
    page.wait_for_function(
        "window.got.length && window.got[window.got.length - 1].event === 'workflow_complete'",
        timeout=20000,
    )
    got = page.evaluate("window.got")
    assert page.evaluate("window.opens") >= 2  # it did reconnect
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))  # nothing lost or twice
    text = "".join(e["data"] for e in got if e["event"] == "answer_chunk")
    assert text == "".join(f"chunk{i} " for i in range(30))
    relay.close()


def test_the_page_reconnects_and_shows_the_whole_answer_once(
    start_server: ServerFactory, new_page: Any
) -> None:
    server = start_server(GUEST_MAX_CONCURRENT_REQUESTS="1")
    relay = NetCut(server.port)
    page = new_page()
    page.goto(relay.url)
    ask(page, "chunks=30 delay=0.1")
    body = page.locator(".gq-body").last
    expect(body).to_contain_text("chunk3 ")
    page.context.set_offline(True)
    relay.cut()
    expect(page.locator(".gq-status").last).to_have_text("Reconnecting…")
    time.sleep(1)
    page.context.set_offline(False)
    expected = " ".join(f"chunk{i}" for i in range(30))
    expect(body).to_have_text(expected, timeout=20000)
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.locator(".gq-retry")).to_have_count(0)
    relay.close()


def test_a_follow_up_question_carries_the_conversation(
    start_server: ServerFactory, new_page: Any
) -> None:
    server = start_server(GUEST_WORKFLOW="tests.workflows.ContextEcho")
    page = new_page()
    page.goto(server.url)
    ask(page, "first question")
    expect(page.locator(".gq-body").last).to_have_text("lang=en turns=")
    ask(page, "second question")
    expect(page.locator(".gq-body").last).to_have_text(
        "lang=en turns=user:first question|assistant:lang=en turns="
    )


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


def sse(*events: tuple[str, Any]) -> str:
    """A stream's body as the queue sends it."""
    return "".join(
        "data: "
        + json.dumps({"event": name, "data": data, "request_id": "r-1", "seq": seq})
        + "\n\n"
        for seq, (name, data) in enumerate(events, 1)
    )


def test_the_wait_shows_as_a_range_when_the_range_is_wide(
    start_server: ServerFactory, new_page: Any
) -> None:
    server = start_server()
    page = new_page()
    # Every text the guest's status line showed, in order (from the mutation records:
    # events that arrive together are shown one after the other within one task).
    page.add_init_script(
        """window.statusTexts = [];
        new MutationObserver((records) => {
          for (const r of records) {
            if (!r.target.classList?.contains("gq-status")) continue;
            for (const n of r.addedNodes) if (n.nodeType === 3) window.statusTexts.push(n.data);
          }
        }).observe(document, { subtree: true, childList: true });"""
    )
    # (estimated_wait_sec, estimated_wait_range_sec) of each question in turn.
    waits = iter([(100.0, [60.0, 180.0]), (10.4, [10.0, 12.0])])

    def answer(route: Any) -> None:
        point, wait_range = next(waits)
        queued = {
            "queue_position": 4,
            "queue_size": 6,
            "estimated_wait_sec": point,
            "estimated_wait_range_sec": wait_range,
        }
        body = sse(("queued", queued), ("workflow_complete", {"suggested_questions": []}))
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route("**/api/v1/guest/chat", answer)
    page.goto(server.url)
    ask(page, "wide")
    page.wait_for_function("window.statusTexts.some(t => t.includes('about'))")
    ask(page, "narrow")
    page.wait_for_function("window.statusTexts.filter(t => t.includes('about')).length > 1")
    shown = [t for t in page.evaluate("window.statusTexts") if "about" in t]
    assert shown == [
        "You are number 4 in line — about 1–3 min",  # noqa: RUF001 (an en dash)
        "You are number 4 in line — about 11 s",
    ]
