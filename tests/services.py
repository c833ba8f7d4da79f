"""The real services some tests need: their URLs, or a skip (a failure where CI requires them).

The suite runs in parallel (pytest-xdist, ``make test``): each worker takes its own Redis
database number and its own block of ports, so workers never share keys or race for a port.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio as aioredis

#: How to enable each service's tests: the end-of-run summary (tests/conftest.py) quotes these.
EXAMPLE_REDIS_URL = "redis://127.0.0.1:6379/8"
EXAMPLE_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
HOW_TO_ENABLE = {
    "Redis": f"GUEST_TEST_REDIS_URL={EXAMPLE_REDIS_URL}",
    "PostgreSQL": f"GUEST_TEST_DATABASE_URL={EXAMPLE_DATABASE_URL}",
    "redis-server": "apt-get install redis-server",
    "nginx": "apt-get install nginx",
    "Chromium": "apt-get install chromium",
    "Node.js": "apt-get install nodejs",
}
#: Redis's default number of databases (``databases 16`` in redis.conf).
REDIS_DATABASES = 16


def missing(service: str, reason: str) -> NoReturn:
    """Skip a test whose tool or service is missing; fail instead where CI requires them.

    The reason starts with ``needs <service>:``, which the end-of-run summary counts.
    """
    assert service in HOW_TO_ENABLE, service
    message = f"needs {service}: {reason}"
    if os.environ.get("GUEST_TEST_REQUIRE_SERVICES"):
        pytest.fail(f"{message} (required: GUEST_TEST_REQUIRE_SERVICES is set)")
    pytest.skip(message)


def worker_index() -> int:
    """This pytest-xdist worker's number (``gw3`` → 3); 0 outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker.removeprefix("gw")) if worker.startswith("gw") else 0


def worker_count() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def redis_database(url: str) -> int:
    """The database number a Redis URL selects (path ``/N`` or ``?db=N``; 0 when absent)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if "db" in query:
        return int(query["db"])
    if parts.scheme in {"redis", "rediss"} and parts.path.strip("/"):
        return int(parts.path.strip("/"))
    return 0


def with_database(url: str, number: int) -> str:
    """``url`` selecting database ``number`` instead."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if "db" in query or parts.scheme not in {"redis", "rediss"}:
        query["db"] = str(number)
        return urlunsplit(parts._replace(query=urlencode(query)))
    return urlunsplit(parts._replace(path=f"/{number}"))


def worker_redis_url(url: str) -> str:
    """This worker's Redis database: ``GUEST_TEST_REDIS_URL``'s number plus the worker's index.

    The tests empty the databases they use (the answer-cache and rate-limit tests clear the
    Django cache), so a run with N workers uses N databases from the one given: its own.
    """
    base = redis_database(url)
    number = base + worker_index()
    if number >= REDIS_DATABASES:
        raise ValueError(
            f"GUEST_TEST_REDIS_URL selects database {base} and this run has {worker_count()} "
            f"workers: worker {worker_index()} would need database {number}, past Redis's "
            f"{REDIS_DATABASES}. Choose a database number of at most "
            f"{REDIS_DATABASES - worker_count()}."
        )
    return with_database(url, number)


def optional_redis_url() -> str | None:
    """This worker's Redis URL, or None when ``GUEST_TEST_REDIS_URL`` is unset."""
    url = os.environ.get("GUEST_TEST_REDIS_URL")
    return worker_redis_url(url) if url else None


def redis_url() -> str:
    """This worker's Redis; skips the test when ``GUEST_TEST_REDIS_URL`` is unset (fails in CI)."""
    url = optional_redis_url()
    if not url:
        missing("Redis", "set GUEST_TEST_REDIS_URL to run the tests that share a real Redis")
    return url


def database_url() -> str:
    """``GUEST_TEST_DATABASE_URL`` (PostgreSQL); skips the test when it is unset (fails in CI)."""
    url = os.environ.get("GUEST_TEST_DATABASE_URL")
    if not url:
        missing("PostgreSQL", "set GUEST_TEST_DATABASE_URL to run the tests on PostgreSQL")
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


#: Servers' ports come from below Linux's ephemeral range (32768-60999), which outgoing
#: connections draw from: between the pick and the server's bind, no client socket can take
#: the port. Each xdist worker has a block of its own; the start within the block is random,
#: so that two runs at once (Django 5.2 and 6) seldom meet, and a server that still finds its
#: port taken is started again on another (tests/e2e/conftest.py).
#: GUEST_TEST_PORT_BASE moves the blocks, for several checkouts tested at once on one machine.
PORT_BASE = int(os.environ.get("GUEST_TEST_PORT_BASE", "20000"))
PORT_BLOCK = 600
_port_offsets = itertools.count(random.SystemRandom().randrange(PORT_BLOCK))


def free_port() -> int:
    """A local port nothing listens on now, from this worker's block."""
    start = PORT_BASE + worker_index() * PORT_BLOCK
    for _ in range(PORT_BLOCK):
        port = start + next(_port_offsets) % PORT_BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # in use, or in TIME_WAIT after an earlier server
                continue
            return port
    raise RuntimeError(f"no free port in {start}-{start + PORT_BLOCK - 1}")


def closed_port() -> int:
    """A local port nothing listens on (it was free a moment ago)."""
    return free_port()


def address_in_use(output: str) -> bool:
    """Whether a server's output says it could not bind its port."""
    return "address already in use" in output.lower()


class PrivateRedis:
    """A redis-server of the test's own, without persistence: a restart forgets everything."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server", "cannot restart a private Redis (apt-get install redis-server)")
        self.binary = binary
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = tmp / "redis-server.log"
        self._use_port(free_port())

    def _use_port(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it; the first start moves to another port if this one was taken meanwhile."""
        first = self.process is None
        for _attempt in range(5):
            if self._start():
                return
            if not (first and address_in_use(self.log_path.read_text(errors="replace"))):
                break
            self._use_port(free_port())
        raise RuntimeError(f"redis-server did not start:\n{self.log_path.read_text()}")

    def _start(self) -> bool:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.tmp)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen([self.binary, *args], stdout=log)
        # A timeout: whatever else may listen on a taken port need not answer.
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                if self.process.poll() is not None:
                    return False
                try:
                    client.ping()
                    return True
                except (redis.ConnectionError, redis.TimeoutError):
                    if time.monotonic() > deadline:
                        self.stop()
                        return False
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
