"""The built wheel plus exactly the README's mount steps give a working site.

Builds the wheel from a copy of this checkout, installs it into a fresh venv
holding nothing else from this repository, creates a site with
``django-admin startproject``, applies the README's fenced blocks marked
``<!-- mount: settings -->``, ``urls``, ``asgi`` and ``shell``, serves it under
uvicorn with the lifespan on, streams an answer from the demo workflow and finds
the request in the admin.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

import guest_queue

from .conftest import ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MOUNT_BLOCK = re.compile(
    r"^[ \t]*<!-- mount: (?P<name>[a-z]+) -->[ \t]*\n"
    r"(?P<indent>[ \t]*)```[a-z]*\n(?P<body>.*?)\n[ \t]*```",
    re.MULTILINE | re.DOTALL,
)
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


def mount_steps(readme: str) -> dict[str, str]:
    """The README's machine-readable mount blocks, by name, dedented."""
    steps: dict[str, str] = {}
    for match in MOUNT_BLOCK.finditer(readme):
        assert match["name"] not in steps, f"two mount blocks named {match['name']!r}"
        steps[match["name"]] = textwrap.dedent(match["body"]) + "\n"
    return steps


def clean_env(venv: Path) -> dict[str, str]:
    """This process's environment without anything pointing at this repository or its venv."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("GUEST_")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{shlex.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


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


def serve(
    venv: Path, site: Path, env: dict[str, str], commands: str, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Run the README's shell lines in the site; the uvicorn line starts the server."""
    server: subprocess.Popen[bytes] | None = None
    url = ""
    for line in commands.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        argv = shlex.split(line)
        assert argv[0] in {"python", "uvicorn"}, f"unexpected README command: {line}"
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
    assert server is not None, "the README's shell steps start no uvicorn"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, f"uvicorn exited early:\n{log.read_text()}"
        try:
            if httpx.get(f"{url}/api/v1/guest/health", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.kill()
    raise AssertionError(f"uvicorn did not start:\n{log.read_text()}")


def stream_answer(url: str, query: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{url}/api/v1/guest/chat", json={"query": query}, timeout=30) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


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


def test_wheel_and_readme_mount_steps_give_a_working_site(tmp_path: Path) -> None:
    steps = mount_steps((ROOT / "README.md").read_text())
    assert set(steps) == {"settings", "urls", "asgi", "shell"}

    wheel = build_wheel(tmp_path)
    assert_wheel_holds_the_app_only(wheel)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    env = clean_env(venv)
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "--quiet", str(wheel), "uvicorn"], tmp_path, env)

    site = tmp_path / "site"
    site.mkdir()
    run([str(venv / "bin" / "django-admin"), "startproject", "mysite", str(site)], site, env)
    with (site / "mysite" / "settings.py").open("a") as settings:
        settings.write("\n" + steps["settings"])
    with (site / "mysite" / "urls.py").open("a") as urls:
        urls.write("\n" + steps["urls"])
    (site / "mysite" / "asgi.py").write_text(steps["asgi"])

    # The app comes from the wheel in the venv, not from this checkout.
    where = run(
        [python, "-c", "import guest_queue as g; print(g.__file__, g.__version__)"], site, env
    )
    assert where.split()[0].startswith(str(venv)) and where.split()[1] == guest_queue.__version__

    server, url = serve(venv, site, env, steps["shell"], tmp_path / "uvicorn.log")
    try:
        events = stream_answer(url, "How does the queue work?")
        kinds = [e["event"] for e in events]
        assert kinds[0] == "queued" and kinds[-1] == "workflow_complete", kinds
        assert "answer_chunk" in kinds
        answer = "".join(e["data"] for e in events if e["event"] == "answer_chunk")
        assert "first-come, first-served" in answer  # the app's own, neutral knowledge
        request_id = events[0]["request_id"]

        chat = httpx.get(f"{url}/chat/", timeout=10)
        assert chat.status_code == 200 and "guest_queue/chat.js" in chat.text
        assert "<title>Guest assistant</title>" in chat.text
        assert not GENESTORY_TEXT.search(chat.content), "GeneStory's text on a mounted site"

        run(
            [python, "manage.py", "createsuperuser", "--noinput", "--username", "owner",
             "--email", "owner@example.com"],
            site,
            {**env, "DJANGO_SUPERUSER_PASSWORD": "wheel-test-password"},
        )  # fmt: skip
        page = admin_lists(url, "owner", "wheel-test-password", request_id)
        assert request_id in page, "the admin does not list the streamed request"
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode in (0, -15), (tmp_path / "uvicorn.log").read_text()
