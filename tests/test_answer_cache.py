"""The answer cache through Django: local memory always, Redis when GUEST_TEST_REDIS_URL is set."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.test import AsyncClient, override_settings

from guest_queue.core.answers.cache import CachedAnswer, answer_key, question_key
from guest_queue.models import GuestRequest
from guest_queue.runtime import answer_cache, get_manager, reset_manager
from guest_queue.runtime.answer_cache import DjangoAnswerCache
from tests.conftest import parse_sse
from tests.services import closed_port, redis_url

SIMPLE = "/api/v1/guest/chat/simple"


@pytest.fixture(params=["default", "redis"])
def cache_alias(request: pytest.FixtureRequest) -> Iterator[str]:
    alias: str = request.param
    if alias == "redis":
        redis_url()  # skips (fails in CI) without Redis
    caches[alias].clear()  # the tests' own Redis database number: safe to empty
    with override_settings(GUEST_CACHE_ENABLED=True, GUEST_CACHE_ALIAS=alias):
        reset_manager()
        yield alias
    caches[alias].clear()


async def ask(client: AsyncClient, query: str) -> dict[str, object]:
    response = await client.post(SIMPLE, {"query": query}, content_type="application/json")
    assert response.status_code == 200, response.content
    body: dict[str, object] = response.json()
    return body


async def test_second_asking_is_served_from_the_cache(
    cache_alias: str, async_client: AsyncClient
) -> None:
    first = await ask(async_client, "chunks=3 suggest=1 What is GeneStory?")
    await asyncio.sleep(0.05)  # the answer is stored in the background
    second = await ask(async_client, "  CHUNKS=3 suggest=1 what is genestory ")
    assert first["cached"] is False and second["cached"] is True
    assert second["answer"] == first["answer"] == "chunk0 chunk1 chunk2 "
    assert second["suggested_questions"] == ["Follow-up 0?"]
    assert get_manager().status()["cache_hits"] == 1
    stored = await DjangoAnswerCache(cache_alias).get(
        question_key("chunks=3 suggest=1 what is genestory")
    )
    assert stored == CachedAnswer("chunk0 chunk1 chunk2 ", ("Follow-up 0?",))


async def test_failures_are_not_cached(cache_alias: str, async_client: AsyncClient) -> None:
    response = await async_client.post(
        SIMPLE, {"query": "fail=workflow_error"}, content_type="application/json"
    )
    assert response.status_code == 502
    await asyncio.sleep(0.05)
    assert await DjangoAnswerCache(cache_alias).get(question_key("fail=workflow_error")) is None


@pytest.mark.django_db(transaction=True)
async def test_history_marks_cached_answers(cache_alias: str, async_client: AsyncClient) -> None:
    await ask(async_client, "chunks=1 history")
    await asyncio.sleep(0.05)
    await ask(async_client, "chunks=1 history")
    await get_manager().close()

    def cached_flags() -> list[bool]:
        return list(GuestRequest.objects.order_by("id").values_list("cached", flat=True))

    rows = await sync_to_async(cached_flags)()
    assert rows == [False, True]


async def test_an_unreachable_cache_never_fails_a_request(async_client: AsyncClient) -> None:
    broken = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
    }
    with override_settings(
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "down": broken,
        },
        GUEST_CACHE_ENABLED=True,
        GUEST_CACHE_ALIAS="down",
    ):
        reset_manager()
        first = await ask(async_client, "chunks=1 anything")
        second = await ask(async_client, "chunks=1 anything")
    assert first["cached"] is second["cached"] is False


@pytest.mark.django_db
def test_prewarm_command_fills_the_cache(cache_alias: str, tmp_path: Path) -> None:
    questions = tmp_path / "questions.txt"
    questions.write_text("# common questions\nchunks=2 first\n\nchunks=2 second\nchunks=2 FIRST?\n")
    call_command("guest_queue_prewarm", "--file", str(questions))
    cache = DjangoAnswerCache(cache_alias)
    for question in ("chunks=2 first", "chunks=2 second"):
        stored = asyncio.run(cache.get(question_key(question)))
        assert stored is not None and stored.text == "chunk0 chunk1 "


@pytest.mark.django_db
def test_prewarm_from_the_demo_knowledge_base(cache_alias: str) -> None:
    """--demo warms the configured knowledge: the app's own by default, a site's when set."""
    cache = DjangoAnswerCache(cache_alias)
    with override_settings(GUEST_WORKFLOW="guest_queue.workflows.demo.DemoWorkflow"):
        call_command("guest_queue_prewarm", "--demo")
    stored = asyncio.run(cache.get(answer_key("How does the queue work?", "en")))
    assert stored is not None and "first-come, first-served" in stored.text
    assert asyncio.run(cache.get(answer_key("What is DNA?", "en"))) is None
    caches[cache_alias].clear()  # local memory keeps 300 entries; GeneStory's are 280
    with override_settings(
        GUEST_WORKFLOW="guest_queue.workflows.demo.DemoWorkflow",
        GUEST_WORKFLOW_OPTIONS={"knowledge": "genestory.assistant.knowledge"},
    ):
        call_command("guest_queue_prewarm", "--demo")
    stored = asyncio.run(cache.get(question_key("What is DNA?")))
    assert stored is not None and stored.text.startswith("DNA (deoxyribonucleic acid)")
    assert len(stored.suggested_questions) == 3
    vi = asyncio.run(cache.get(question_key("Gen là gì?")))
    assert vi is not None and "protein" in vi.text


def test_prewarm_demo_needs_a_workflow_that_lists_its_questions() -> None:
    with pytest.raises(CommandError, match="questions"):
        call_command("guest_queue_prewarm", "--demo")  # the tests' scripted workflow


@pytest.fixture
def redis_cache() -> Iterator[str]:
    redis_url()  # skips (fails in CI) without Redis
    caches["redis"].clear()
    yield "redis"
    caches["redis"].clear()


async def test_hot_answers_are_served_from_process_memory_for_a_few_seconds(
    redis_cache: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = CachedAnswer("From memory.", ("More?",))
    monkeypatch.setattr(answer_cache, "RECENT_SEC", 0.2)
    cache = DjangoAnswerCache(redis_cache)
    await cache.set("hot question", answer)
    caches[redis_cache].clear()  # gone from Redis: only this process still holds it
    assert await cache.get("hot question") == answer
    await asyncio.sleep(0.3)
    assert await cache.get("hot question") is None


async def test_without_the_local_front_every_lookup_asks_the_cache(
    redis_cache: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(answer_cache, "RECENT_SEC", 0)
    cache = DjangoAnswerCache(redis_cache)
    await cache.set("question", CachedAnswer("Stored."))
    caches[redis_cache].clear()
    assert await cache.get("question") is None


def test_local_memory_caches_get_no_second_copy() -> None:
    assert DjangoAnswerCache("default").recent is None


async def test_a_cached_answer_goes_out_in_one_write(
    cache_alias: str, async_client: AsyncClient
) -> None:
    await ask(async_client, "chunks=4 one write")
    await asyncio.sleep(0.05)
    response: Any = await async_client.post(
        "/api/v1/guest/chat", {"query": "chunks=4 one write"}, content_type="application/json"
    )
    parts = [part async for part in response.streaming_content]
    names = [event["event"] for event in parse_sse(b"".join(parts))]
    assert names == ["queued", "processing", "answer_chunk", "workflow_complete"]
    assert len(parts) == 1


def test_storage_keys_are_keyed_hashes_of_the_question() -> None:
    import hashlib

    key = question_key("What is my BRCA1 result?")
    stored = DjangoAnswerCache.storage_key(key)
    # Not an unkeyed hash: whoever reads the cache cannot confirm a guessed question.
    assert hashlib.sha256(key.encode()).hexdigest() not in stored
    with override_settings(GUEST_HASH_KEY="another key for the keyed hashes, 48 chars long"):
        assert DjangoAnswerCache.storage_key(key) != stored
    assert DjangoAnswerCache.storage_key(key) == stored


@pytest.mark.django_db
def test_prewarm_warms_each_language_guests_ask_in(cache_alias: str, tmp_path: Path) -> None:
    questions = tmp_path / "questions.txt"
    questions.write_text("chunks=1 first\n")
    call_command("guest_queue_prewarm", "--file", str(questions), "--language", "vi")
    cache = DjangoAnswerCache(cache_alias)
    assert asyncio.run(cache.get(answer_key("chunks=1 first", "vi"))) is not None
    # Only the languages asked for: an answer for "vi" is not one for guests sending none.
    assert asyncio.run(cache.get(answer_key("chunks=1 first", None))) is None
    call_command("guest_queue_prewarm", "--file", str(questions))
    # By default: guests sending no language, and the site's LANGUAGE_CODE.
    assert asyncio.run(cache.get(answer_key("chunks=1 first", None))) is not None
    assert asyncio.run(cache.get(answer_key("chunks=1 first", settings.LANGUAGE_CODE))) is not None
