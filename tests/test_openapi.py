"""The OpenAPI document: served, kept in docs/, and in step with the URLs and error codes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from django.test import AsyncClient
from django.urls import URLPattern

from guest_queue import urls
from guest_queue.http.schema import DOCUMENT

ROOT = Path(__file__).resolve().parents[1]


def document() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return data


def test_docs_copy_equals_the_served_source() -> None:
    assert (ROOT / "docs" / "openapi.json").read_text() == DOCUMENT.read_text()


async def test_served_with_the_mount_prefix(async_client: AsyncClient) -> None:
    response = await async_client.get("/api/v1/guest/openapi.json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    served = response.json()
    assert served["openapi"].startswith("3.1")
    assert served["servers"] == [{"url": "/api/v1/guest"}]
    assert served["paths"] == document()["paths"]


def test_every_route_is_documented() -> None:
    routes = {
        "/" + re.sub(r"<str:(\w+)>", r"{\1}", str(p.pattern))
        for p in urls.urlpatterns
        if isinstance(p, URLPattern) and p.name not in ("not-found", "bench-bare")
    }
    assert routes <= set(document()["paths"])


def test_every_error_code_in_the_code_is_documented() -> None:
    text = DOCUMENT.read_text()
    sources = [*(ROOT / "guest_queue" / "http").glob("*.py")]
    sources += (ROOT / "guest_queue" / "core").glob("*.py")
    found: set[str] = set()
    for path in sources:
        source = path.read_text()
        found |= set(re.findall(r'(?:BadRequest|json_error)\(\s*\d+,\s*"(\w+)"', source))
        found |= set(re.findall(r'^\s*code = "(\w+)"', source, re.M))
        found |= set(re.findall(r'^CODE_\w+: Final = "(\w+)"', source, re.M))
    found -= {"refused"}  # the base class's placeholder; every raised refusal is a subclass
    assert found, "no codes found: the patterns are out of date"
    missing = {code for code in found if f'"{code}"' not in text}
    assert not missing


# Found by schemathesis against a live server (tests/e2e/test_schemathesis.py).
async def test_post_to_an_unknown_path_is_a_json_404_not_a_csrf_403() -> None:
    client = AsyncClient(enforce_csrf_checks=True)
    response = await client.post(f"/api/v1/guest/chat/{'0' * 8}/nothing")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


async def test_a_path_with_an_encoded_newline_is_a_json_404(async_client: AsyncClient) -> None:
    response = await async_client.get("/api/v1/guest/queue/x%0Ay/z")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
