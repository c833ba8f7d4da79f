"""Production static files: DEBUG=false under uvicorn after collectstatic, as `make serve` runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import ROOT, ServerFactory

ONE_YEAR = 365 * 24 * 3600


def collectstatic(static_root: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUEST_")}
    env.update(DJANGO_SETTINGS_MODULE="genestory.settings", DEBUG="false")
    env["STATIC_ROOT"] = str(static_root)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


def max_age(cache_control: str) -> int:
    match = re.search(r"max-age=(\d+)", cache_control)
    assert match, cache_control
    return int(match.group(1))


def test_chat_page_and_its_hashed_assets_are_served_without_debug(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    static_root = tmp_path / "static"
    collectstatic(static_root)
    server = start_server(DEBUG="false", STATIC_ROOT=str(static_root))
    page = httpx.get(server.url + "/", timeout=10)
    assert page.status_code == 200
    css = re.search(r'href="(/static/guest_queue/chat\.[0-9a-f]{12}\.css)"', page.text)
    js = re.search(r'src="(/static/guest_queue/chat\.[0-9a-f]{12}\.js)"', page.text)
    assert css and js, page.text
    for url, kind in ((css.group(1), "text/css"), (js.group(1), "javascript")):
        asset = httpx.get(server.url + url, headers={"Accept-Encoding": "gzip"}, timeout=10)
        assert asset.status_code == 200, url
        assert kind in asset.headers["content-type"]
        assert asset.headers.get("content-encoding") == "gzip"
        assert max_age(asset.headers["cache-control"]) >= ONE_YEAR
        assert "immutable" in asset.headers["cache-control"]
        assert asset.text == (static_root / url.removeprefix("/static/")).read_text()
    # The unhashed name still answers (old pages in caches), but is not cached for long.
    plain = httpx.get(server.url + "/static/guest_queue/chat.css", timeout=10)
    assert plain.status_code == 200 and max_age(plain.headers["cache-control"]) < 3600
    assert httpx.get(server.url + "/static/guest_queue/nope.css").status_code == 404


def test_without_collectstatic_the_page_still_renders(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server(DEBUG="false", STATIC_ROOT=str(tmp_path / "empty"))
    page = httpx.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and "/static/guest_queue/chat.js" in page.text
    assert "run collectstatic" in server.output()
