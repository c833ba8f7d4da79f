"""The real services some tests need: their URLs, or a skip (a failure where CI requires them)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn

import pytest
import redis
import redis.asyncio as aioredis


def missing(reason: str) -> NoReturn:
    """Skip a test whose tool or service is missing; fail instead where CI requires them."""
    if os.environ.get("GUEST_TEST_REQUIRE_SERVICES"):
        pytest.fail(f"{reason} (required: GUEST_TEST_REQUIRE_SERVICES is set)")
    pytest.skip(reason)


def redis_url() -> str:
    """``GUEST_TEST_REDIS_URL``; skips the test when it is unset (fails when CI requires it)."""
    url = os.environ.get("GUEST_TEST_REDIS_URL")
    if not url:
        if os.environ.get("GUEST_TEST_REQUIRE_SERVICES"):
            pytest.fail("GUEST_TEST_REDIS_URL is required here but not set")
        pytest.skip("Shared-queue tests need a real Redis: set GUEST_TEST_REDIS_URL (CI sets it)")
    return url


def database_url() -> str:
    """``GUEST_TEST_DATABASE_URL`` (PostgreSQL); skips the test when it is unset (fails in CI)."""
    url = os.environ.get("GUEST_TEST_DATABASE_URL")
    if not url:
        if os.environ.get("GUEST_TEST_REQUIRE_SERVICES"):
            pytest.fail("GUEST_TEST_DATABASE_URL is required here but not set")
        pytest.skip("This test needs a real PostgreSQL: set GUEST_TEST_DATABASE_URL (CI sets it)")
    return url


async def delete_prefix(url: str, prefix: str) -> None:
    """Remove every key of one queue (the tests' keys live under their own prefix)."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{{{prefix}}}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def redis_prefix(url: str) -> AsyncIterator[str]:
    """A key prefix of the test's own, emptied after the test."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    await delete_prefix(url, prefix)


def closed_port() -> int:
    """A local port nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own, without persistence: a restart forgets everything."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server is not installed: cannot restart a private Redis")
        self.binary = binary
        self.port = closed_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.tmp)]
        self.process = subprocess.Popen([self.binary, *args], stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
