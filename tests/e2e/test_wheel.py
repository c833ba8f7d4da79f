"""The built wheel plus exactly the README's mount steps give a working site.

Builds the wheel from a copy of this checkout, installs it into a fresh venv
holding nothing else from this repository, creates a site with
``django-admin startproject`` (its middleware plus ``LocaleMiddleware``, and two
views of its own: ``tests/mounted_site.py``), applies the README's fenced blocks
marked ``<!-- mount: settings -->``, ``urls``, ``asgi`` and ``shell``, and serves
it under uvicorn with the lifespan on, first with startproject's ``DEBUG = True``,
then with ``DEBUG = False`` and the README's ``static`` and ``static-shell``
blocks (ServeStatic). In each mode it checks what a site owner would notice
(``check_mounted_site``): the chat page and its script and styles, an answer in
the page in Chromium, the site's own views keeping the site's middleware, the
API served through its own lane (none of the site's middleware on its
responses), a client at its cap refused by ``ClientCapGuard`` before Django
runs, the request log line, and no GeneStory text on the site's chat page.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import guest_queue
from tests.mounted_site import append_settings, make_site, mount_steps, run
from tests.services import missing

from .conftest import ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CHAT = "/api/v1/guest/chat"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As tests/e2e/test_browser.py launches Debian's Chromium.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# What the wheel build copies from the checkout: everything but local environments and caches,
# so a packaging mistake that would ship tests/, bench/ or genestory/ still shows.
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".*_cache",
    "artifacts", "db.sqlite3*", "staticfiles", "node_modules",
)  # fmt: skip


#: GeneStory's name and subject: none of it ships in the app (issue 23).
GENESTORY_TEXT = re.compile(
    "(?-i:GeneStory)|genetic|saliva|medical advice|xét nghiệm gen".encode(), re.IGNORECASE
)


#: What the site owner changes to go to production, besides the README's static recipe.
PRODUCTION = 'DEBUG = False\nALLOWED_HOSTS = ["127.0.0.1", "localhost"]\n'
#: Three questions with long demo answers (about 2 s each at the default pace), asked by
#: one client to hold its three places (GUEST_MAX_REQUESTS_PER_CLIENT's default) at once.
HOLDING_QUESTIONS = [
    "How do I connect my own model?",
    "How does the queue work?",
    "What happens when many guests ask at once?",
]


def clean_env(venv: Path) -> dict[str, str]:
    """This process's environment without anything pointing at this repository or its venv."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("GUEST_")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_COPIED)
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(src)], tmp)
    (wheel,) = (tmp / "dist").glob("*.whl")
    return wheel


def assert_wheel_holds_the_app_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        meta = archive.read(metadata).decode()
    top = {name.split("/")[0] for name in names}
    assert top == {"guest_queue", f"django_guest_queue-{guest_queue.__version__}.dist-info"}
    for data in [
        "py.typed",
        "templates/guest_queue/chat.html",
        "templates/admin/guest_queue/guestrequest/change_list.html",
        "static/guest_queue/chat.js",
        "static/guest_queue/chat.css",
        "locale/vi/LC_MESSAGES/django.po",
        "locale/vi/LC_MESSAGES/django.mo",
        "workflows/knowledge/en.json",
        "workflows/knowledge/vi.json",
        "static/guest_queue/favicon.svg",
        "migrations/__init__.py",
        "migrations/0001_initial.py",
    ]:
        assert f"guest_queue/{data}" in names, f"the wheel lacks guest_queue/{data}"
    with zipfile.ZipFile(wheel) as archive:
        branded = [
            name
            for name in names
            if name.startswith("guest_queue/") and GENESTORY_TEXT.search(archive.read(name))
        ]
    assert not branded, f"GeneStory's text ships in the wheel: {branded}"
    assert f"\nVersion: {guest_queue.__version__}\n" in meta
    assert "\nName: django-guest-queue\n" in meta
    assert "Provides-Extra: redis" in meta and "Provides-Extra: openai" in meta


def readme_lines(
    venv: Path, site: Path, env: dict[str, str], commands: str, log: Path
) -> tuple[subprocess.Popen[bytes] | None, str]:
    """Run the README's shell lines in the site; a uvicorn line starts the server."""
    server: subprocess.Popen[bytes] | None = None
    url = ""
    for line in commands.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        argv = shlex.split(line)
        assert argv[0] in {"python", "pip", "uvicorn"}, f"unexpected README command: {line}"
        argv[0] = str(venv / "bin" / argv[0])
        if Path(argv[0]).name == "uvicorn":
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            argv += ["--host", "127.0.0.1", "--port", str(port)]
            with log.open("wb") as out:
                server = subprocess.Popen(
                    argv, cwd=site, env=env, stdout=out, stderr=subprocess.STDOUT
                )
        else:
            run(argv, site, env)
    return server, url


@contextmanager
def served(venv: Path, site: Path, env: dict[str, str], commands: str, log: Path) -> Iterator[str]:
    """The README's ``shell`` block: migrate, then uvicorn until the block ends."""
    server, url = readme_lines(venv, site, env, commands, log)
    assert server is not None, "the README's shell steps start no uvicorn"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"uvicorn exited early:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/api/v1/guest/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"uvicorn did not start:\n{log.read_text()}"
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode in (0, -15), log.read_text()


def stream_answer(url: str, query: str) -> tuple[httpx.Headers, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{url}{CHAT}", json={"query": query}, timeout=30) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return r.headers, events


def admin_lists(url: str, username: str, password: str, request_id: str) -> str:
    """Log in to the admin and poll the request list until ``request_id`` shows (or 15 s)."""
    with httpx.Client(base_url=url, timeout=10, follow_redirects=True) as client:
        login = client.get("/admin/login/", params={"next": "/admin/"})
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
        assert token is not None, login.text
        form = {"username": username, "password": password, "next": "/admin/"}
        response = client.post(
            "/admin/login/",
            data={**form, "csrfmiddlewaretoken": token[1]},
            headers={"Referer": url},
        )
        assert response.status_code == 200 and "/admin/logout/" in response.text, response.text
        deadline = time.monotonic() + 15
        while True:
            page = client.get("/admin/guest_queue/guestrequest/")
            assert page.status_code == 200
            if request_id in page.text or time.monotonic() > deadline:
                return page.text
            time.sleep(0.3)


def assert_site_middleware(response: httpx.Response) -> None:
    """The marks the site's stack leaves on every response of its own pages."""
    assert response.headers.get("x-frame-options") == "DENY", response.headers  # clickjacking
    assert response.headers.get("content-language"), response.headers  # locale
    assert "accept-language" in response.headers.get("vary", "").lower(), response.headers


def assert_no_site_middleware(response: httpx.Response) -> None:
    """An API response served by the lane: its own middleware's headers, none of the site's."""
    headers = response.headers
    assert headers.get("x-content-type-options") == "nosniff", headers  # APISecurityMiddleware
    assert "x-frame-options" not in headers, headers  # XFrameOptionsMiddleware did not run
    assert "content-language" not in headers, headers  # LocaleMiddleware did not run
    assert "set-cookie" not in headers, headers  # neither sessions nor CSRF
    vary = headers.get("vary", "").lower()
    assert "cookie" not in vary and "accept-language" not in vary, headers


def check_site_views(url: str) -> None:
    """The site's own views keep its sessions, auth, CSRF, locale and clickjacking middleware."""
    with httpx.Client(base_url=url, timeout=10) as client:
        home = client.get("/", headers={"Accept-Language": "vi"})
        assert home.status_code == 200 and "Welcome to my site" in home.text
        assert_site_middleware(home)
        assert home.headers["content-language"] == "vi"

        first = client.get("/account/", headers={"Accept-Language": "vi"})
        assert first.status_code == 200, first.text
        assert_site_middleware(first)
        account = first.json()
        assert account["language"] == "vi"  # LocaleMiddleware
        assert account["user"] == "AnonymousUser" and not account["authenticated"]  # auth
        assert {"sessionid", "csrftoken"} <= set(client.cookies)  # sessions, CSRF
        assert "cookie" in first.headers["vary"].lower()
        # The session is kept in the site's database between requests.
        assert client.get("/account/").json()["visits"] == 2
        # CsrfViewMiddleware guards the site's forms: no token, no POST.
        refused = client.post("/account/", data={"x": "1"}, headers={"Referer": url})
        assert refused.status_code == 403, refused.text
        token = client.cookies["csrftoken"]
        allowed = client.post(
            "/account/", data={"csrfmiddlewaretoken": token}, headers={"Referer": url}
        )
        assert allowed.status_code == 200 and allowed.json()["method"] == "POST"


def check_page_assets(url: str, html: str, *, hashed: bool) -> None:
    """The chat page's script and stylesheet, from the page's own tags: 200, right types."""
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', html)
    styles = re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"', html)
    assert any("guest_queue/chat" in s for s in scripts), html
    assert any("guest_queue/chat" in s for s in styles), html
    for path, kind in [*((s, "javascript") for s in scripts), *((s, "css") for s in styles)]:
        response = httpx.get(httpx.URL(url).join(path), timeout=10)
        assert response.status_code == 200, (path, response.status_code)
        content_type = response.headers["content-type"]
        if kind == "javascript":
            assert content_type.split(";")[0] in {"text/javascript", "application/javascript"}
        else:
            assert content_type.startswith("text/css"), content_type
        assert response.content, path
        if hashed:  # collectstatic's manifest names, which ServeStatic serves for a year
            assert re.search(r"chat\.[0-9a-f]{12}\.(js|css)$", path), path
            assert "max-age" in response.headers.get("cache-control", ""), response.headers


async def guard_refusal(url: str) -> httpx.Response:
    """Hold a client's three places with slow answers, then send its fourth question.

    Returns the fourth response, after checking the three held ones came through
    the lane (its ``X-Content-Type-Options``), and reads the three to their end.
    """
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with (
        httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as client,
        AsyncExitStack() as stack,
    ):
        held = [
            await stack.enter_async_context(client.stream("POST", CHAT, json={"query": q}))
            for q in HOLDING_QUESTIONS
        ]
        for response in held:
            assert response.status_code == 200, await response.aread()
            assert_no_site_middleware(response)
        fourth = await client.post(CHAT, json={"query": "What is a gene?"})
        for response in held:
            await response.aread()
        return fourth


def assert_guard_refused(fourth: httpx.Response) -> None:
    assert fourth.status_code == 429, fourth.text
    assert fourth.json()["code"] == "client_limit"
    assert int(fourth.headers["retry-after"]) >= 1
    # ClientCapGuard answered from the ASGI scope: no Django, so not even the lane's
    # middleware (whose X-Content-Type-Options is on every response Django sends).
    assert set(fourth.headers) == {
        "content-type",
        "content-length",
        "retry-after",
        "date",
        "server",
    }
    assert "x-content-type-options" not in fourth.headers


def wait_for_log_line(log: Path, line: str) -> None:
    deadline = time.monotonic() + 10
    while line not in log.read_text():
        assert time.monotonic() < deadline, (
            f"no {line!r} in the server's output:\n{log.read_text()}"
        )
        time.sleep(0.1)


def answer_in_chromium(url: str) -> str | None:
    """Ask a question on the chat page in headless Chromium; the reason when it cannot run."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        return "Playwright is not installed"
    if not Path(CHROMIUM).exists():
        return "no Chromium found (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(locale="en-US")
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            failed: list[str] = []

            def note_failure(response: Any) -> None:
                if response.status >= 400:
                    failed.append(f"{response.status} {response.url}")

            page.on("response", note_failure)
            page.goto(f"{url}/chat/")
            page.get_by_label("Your question").fill("How does the queue work?")
            page.keyboard.press("Enter")
            answer = page.locator(".gq-turn").last.locator(".gq-body")
            expect(answer).to_contain_text("first-come, first-served", timeout=20000)
            expect(page.locator(".gq-turn").last.locator(".gq-suggestion")).to_have_count(
                3, timeout=15000
            )
            assert not errors and not failed, (errors, failed)
        finally:
            browser.close()
    return None


@dataclass
class ModeResult:
    chat_html: str
    browser_skipped: str | None = None
    notes: list[str] = field(default_factory=list)


def check_mounted_site(url: str, log: Path, *, debug: bool) -> ModeResult:
    """Everything a site owner would notice of the mount, in one DEBUG mode."""
    # The chat page renders, and its script and styles load.
    chat = httpx.get(f"{url}/chat/", timeout=10)
    assert chat.status_code == 200
    assert_site_middleware(chat)  # the page is the site's: its middleware runs on it
    check_page_assets(url, chat.text, hashed=not debug)

    # The site's own views keep their middleware.
    check_site_views(url)

    # The API gets the lane: an answer streams, with none of the site's middleware on it.
    headers, events = stream_answer(url, "What is this demo?")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "queued" and kinds[-1] == "workflow_complete", kinds
    answer = "".join(e["data"] for e in events if e["event"] == "answer_chunk")
    assert "guest_queue" in answer  # the app's own, neutral knowledge
    assert_no_site_middleware(httpx.Response(200, headers=headers))
    status = httpx.get(f"{url}/api/v1/guest/queue/status", timeout=10)
    assert status.status_code == 200 and status.headers["content-length"]  # the lane's own
    assert_no_site_middleware(status)
    bad = httpx.post(f"{url}{CHAT}", content=b"{", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["code"]
    assert_no_site_middleware(bad)

    # The request log line (the README's LOGGING block).
    wait_for_log_line(log, f"request {events[0]['request_id']} completed")

    # The guard: a client at its cap is refused before Django runs.
    assert_guard_refused(asyncio.run(guard_refusal(url)))

    # A question answered in the page, in a browser.
    return ModeResult(chat.text, answer_in_chromium(url))


def test_wheel_mounted_by_the_readme_into_a_fresh_site(tmp_path: Path) -> None:
    steps = mount_steps((ROOT / "README.md").read_text())
    assert set(steps) == {"settings", "urls", "asgi", "shell", "static", "static-shell"}

    wheel = build_wheel(tmp_path)
    assert_wheel_holds_the_app_only(wheel)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    env = clean_env(venv)
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "--quiet", str(wheel), "uvicorn"], tmp_path, env)

    site = tmp_path / "site"
    make_site(str(venv / "bin" / "django-admin"), site, steps, env)

    # The app comes from the wheel in the venv, not from this checkout.
    where = run(
        [python, "-c", "import guest_queue as g; print(g.__file__, g.__version__)"], site, env
    )
    assert where.split()[0].startswith(str(venv)) and where.split()[1] == guest_queue.__version__

    # DEBUG on, as startproject leaves it: the README's four steps and nothing else.
    log = tmp_path / "uvicorn-debug.log"
    with served(venv, site, env, steps["shell"], log) as url:
        debug_on = check_mounted_site(url, log, debug=True)
        request_id = stream_answer(url, "Can I stop an answer?")[1][0]["request_id"]
        run(
            [python, "manage.py", "createsuperuser", "--noinput", "--username", "owner",
             "--email", "owner@example.com"],
            site,
            {**env, "DJANGO_SUPERUSER_PASSWORD": "wheel-test-password"},
        )  # fmt: skip
        page = admin_lists(url, "owner", "wheel-test-password", request_id)
        assert request_id in page, "the admin does not list the streamed request"

    # DEBUG off: the README's static-files recipe, then the same shell step.
    append_settings(site, PRODUCTION + steps["static"])
    readme_lines(venv, site, env, steps["static-shell"], tmp_path / "unused.log")
    log = tmp_path / "uvicorn-production.log"
    with served(venv, site, env, steps["shell"], log) as url:
        debug_off = check_mounted_site(url, log, debug=False)

    # No GeneStory text on a site that is not GeneStory's (issue 26).
    for mode in (debug_on, debug_off):
        assert "<title>Guest assistant</title>" in mode.chat_html
        assert not GENESTORY_TEXT.search(mode.chat_html.encode()), "GeneStory's text on the page"
    skipped = debug_on.browser_skipped or debug_off.browser_skipped
    if skipped:
        missing("Chromium", f"everything but the chat page in Chromium passed; {skipped}")
