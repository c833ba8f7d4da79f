"""POST chat's language and conversation history reach the workflow, validated."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import AsyncClient, override_settings

from .conftest import parse_sse, read_stream

SIMPLE = "/api/v1/guest/chat/simple"


async def ask(client: AsyncClient, body: dict[str, Any], **headers: str) -> Any:
    return await client.post(
        SIMPLE, json.dumps(body), content_type="application/json", headers=headers
    )


@override_settings(GUEST_WORKFLOW="tests.workflows.ContextEcho")
async def test_language_and_history_reach_the_workflow(async_client: AsyncClient) -> None:
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    answer = await ask(async_client, {"query": "q", "language": "vi", "history": history})
    assert answer.json()["answer"] == "lang=vi turns=user:Hi|assistant:Hello!"
    from_header = await ask(async_client, {"query": "q"}, **{"Accept-Language": "en-GB,en;q=0.8"})
    assert from_header.json()["answer"] == "lang=en-GB turns="
    nothing = await ask(async_client, {"query": "q"}, **{"Accept-Language": "*"})
    assert nothing.json()["answer"] == "lang=None turns="


@override_settings(GUEST_WORKFLOW="tests.workflows.ContextEcho", GUEST_CACHE_ENABLED=True)
async def test_questions_with_history_bypass_the_cache(async_client: AsyncClient) -> None:
    plain = [(await ask(async_client, {"query": "same"})).json()["cached"] for _ in range(2)]
    assert plain == [False, True]
    turns = [{"role": "user", "content": "earlier"}]
    with_history = await ask(async_client, {"query": "same", "history": turns})
    assert with_history.json()["cached"] is False
    assert with_history.json()["answer"] == "lang=None turns=user:earlier"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("language", 5, "invalid_language"),
        ("language", "not a language", "invalid_language"),
        ("history", "no", "invalid_history"),
        ("history", [{"role": "system", "content": "x"}], "invalid_history"),
        ("history", [{"role": {}, "content": "x"}], "invalid_history"),
        ("history", [{"role": ["user"], "content": "x"}], "invalid_history"),
        ("history", [["user", "x"]], "invalid_history"),
        ("history", [{"role": "user", "content": ""}], "invalid_history"),
        ("history", [{"role": "user", "content": "x" * 2001}], "invalid_history"),
        ("history", [{"role": "user", "content": "x", "more": 1}], "invalid_history"),
        ("history", [{"role": "user", "content": "x"}] * 21, "invalid_history"),
    ],
)
async def test_bad_language_or_history_is_a_clear_400(
    async_client: AsyncClient, field: str, value: Any, code: str
) -> None:
    response = await ask(async_client, {"query": "q", field: value})
    assert response.status_code == 400 and response.json()["code"] == code


@pytest.mark.parametrize(
    "content", ["a\x1b[2Jb", "line\rforged", "\u202eevil", "a\u2066b", "\x85", "\ud800"]
)
async def test_history_refuses_the_characters_a_query_may_not_hold(
    async_client: AsyncClient, content: str
) -> None:
    turns = [{"role": "user", "content": "fine"}, {"role": "assistant", "content": content}]
    response = await ask(async_client, {"query": "q", "history": turns})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_history"
    assert "not allowed" in response.json()["error"]
    as_query = await ask(async_client, {"query": content})
    assert as_query.json()["code"] == "invalid_query"  # the same rule as the question's


async def test_the_stream_endpoint_takes_them_too(async_client: AsyncClient) -> None:
    body = {"query": "chunks=1", "language": "vi", "history": [{"role": "user", "content": "a"}]}
    response = await async_client.post("/api/v1/guest/chat", body, content_type="application/json")
    assert parse_sse(await read_stream(response))[-1]["event"] == "workflow_complete"
