"""The API's OpenAPI 3.1 document: ``openapi.json`` beside this module is its one source.

``docs/openapi.json`` is a copy that a test keeps equal to it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DOCUMENT = Path(__file__).resolve().parent / "openapi.json"


@cache
def _document() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    return data


@cache
def openapi_json(prefix: str) -> bytes:
    """The document, its ``servers`` entry naming where this site mounts the API."""
    document = {**_document(), "servers": [{"url": prefix.rstrip("/") or "/"}]}
    return json.dumps(document, ensure_ascii=False).encode()
