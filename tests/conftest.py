"""Shared fixtures: a fresh queue manager for every test, SSE parsing helpers.

Also the end of every run: one line saying how many tests skipped for want of a service.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from collections import Counter
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from guest_queue.runtime import reset_manager

from .services import (
    EXAMPLE_REDIS_URL,
    HOW_TO_ENABLE,
    REDIS_DATABASES,
    PrivateRedis,
    redis_database,
    redis_prefix,
    redis_url,
)

#: The reason of a skip from tests/services.py's ``missing``.
SERVICE_SKIP = re.compile(r"needs ([\w.-]+): ")
SUMMARY_KEY = pytest.StashKey[str]()
#: The services the tests reach over the network, on their standard local ports.
SERVICE_PORTS = {"Redis": 6379, "PostgreSQL": 5432}
EXAMPLE_REDIS_DB = redis_database(EXAMPLE_REDIS_URL)


def worker_total(config: pytest.Config) -> int:
    """How many pytest-xdist workers this run starts (1 without xdist)."""
    return len(getattr(config.option, "tx", None) or []) or 1


def pytest_configure(config: pytest.Config) -> None:
    """Register ``exclusive``; refuse a run whose workers need Redis databases past the last."""
    config.addinivalue_line(
        "markers",
        "exclusive: runs while no other test of this pytest-xdist run does (heavy load, or "
        "timing a server's behaviour on this small machine)",
    )
    url = os.environ.get("GUEST_TEST_REDIS_URL")
    if url and not hasattr(config, "workerinput"):
        first, workers = redis_database(url), worker_total(config)
        if first + workers > REDIS_DATABASES:
            raise pytest.UsageError(
                f"GUEST_TEST_REDIS_URL selects database {first}; the {workers} workers of this "
                f"run use databases {first} to {first + workers - 1} (one each), past Redis's "
                f"{REDIS_DATABASES}: choose a number of at most {REDIS_DATABASES - workers}."
            )


#: Run first under pytest-xdist: the longest tests (a worker that takes one of them near the
#: end would keep the whole run waiting). The rest keep pytest-randomly's order.
FIRST = ("tests/e2e/test_wheel.py", "tests/e2e/")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist, start with the long tests (every worker sorts alike)."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        rank = {prefix: n for n, prefix in enumerate(FIRST)}

        def first(item: pytest.Item) -> int:
            found = [rank[p] for p in FIRST if item.nodeid.startswith(p)]
            return min(found, default=len(FIRST))

        items.sort(key=first)


@contextmanager
def turn(config: pytest.Config, exclusive: bool) -> Iterator[None]:
    """A test's turn among the pytest-xdist workers: alone when ``exclusive``, else shared.

    Two lock files shared by the run's workers: an exclusive test takes the gate, then
    waits for the tests running to end; while it holds the gate no other test starts.
    """
    if not hasattr(config, "workerinput") or not config.option.basetemp:
        yield
        return
    # xdist gives each worker <the run's base temp>/<worker id>: the parent is the run's.
    shared = Path(config.option.basetemp).parent
    with (shared / "turn.gate").open("a") as gate, (shared / "turn.run").open("a") as running:
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(running, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if not exclusive:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Run each test in its turn (see ``turn``); the wait counts in no timeout or duration."""
    with turn(item.config, item.get_closest_marker("exclusive") is not None):
        return (yield)


def answers(port: int) -> bool:
    """Whether something listens on this local port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def service_summary(counts: Counter[str], workers: int) -> str:
    """The run's last line: how many tests skipped for want of a service, and how to run them."""
    total = sum(counts.values())
    if not total:
        return "0 tests skipped for want of a service."
    steps = []
    if variables := [HOW_TO_ENABLE[s] for s in SERVICE_PORTS if s in counts]:
        notes = []
        if "Redis" in counts:
            first, last = EXAMPLE_REDIS_DB, EXAMPLE_REDIS_DB + workers - 1
            used = f"databases {first} to {last}" if last > first else f"database {first}"
            notes.append(f"a run like this one empties Redis {used}")
        if running := [s for s, port in SERVICE_PORTS.items() if s in counts and answers(port)]:
            verb = "answers on its" if len(running) == 1 else "answer on their"
            notes.append(f"{' and '.join(running)} {verb} usual port here")
        steps.append(f"set {' '.join(variables)}" + (f" ({'; '.join(notes)})" if notes else ""))
    if tools := sorted(HOW_TO_ENABLE[s].split()[-1] for s in counts if s not in SERVICE_PORTS):
        steps.append("apt-get install " + " ".join(tools))
    each = ", ".join(f"{service} {n}" for service, n in counts.most_common())
    return (
        f"{total} test{'s' * (total != 1)} skipped for want of a service ({each}). To run them, "
        f"{', and '.join(steps)}, or run .ci/run, which does it all (docs/testing.md)."
    )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Count the skips for want of a service (under xdist, the workers' reports are here)."""
    counts: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        found = SERVICE_SKIP.search(reason)
        if found and found[1] in HOW_TO_ENABLE:
            counts[found[1]] += 1
    config.stash[SUMMARY_KEY] = service_summary(counts, worker_total(config))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Write that line last, after pytest's own summary."""
    line = config.stash.get(SUMMARY_KEY, None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if line is not None and reporter is not None:
        reporter.write_line(line, yellow="for want" in line and not line.startswith("0 "))


@pytest.fixture(autouse=True)
def fresh_manager() -> Iterator[None]:
    reset_manager()
    yield
    reset_manager()


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """Parse a whole SSE body the way the seed's frontend does, checking the framing."""
    events = []
    for message in raw.decode().split("\n\n"):
        if not message.strip() or message.startswith(":"):
            continue
        lines = message.split("\n")
        assert len(lines) == 1 and lines[0].startswith("data: "), message
        events.append(json.loads(lines[0][len("data: ") :]))
    return events


async def read_stream(response: Any) -> bytes:
    body = b""
    async for part in response.streaming_content:
        body += part
    return body


async def sse_events(response: Any) -> AsyncIterator[dict[str, Any]]:
    """Yield events from a streaming test response as they arrive."""
    buffer = b""
    async for part in response.streaming_content:
        buffer += part
        while b"\n\n" in buffer:
            message, buffer = buffer.split(b"\n\n", 1)
            if message.startswith(b"data: "):
                yield json.loads(message[6:])


def http_scope(
    method: str,
    path: str,
    headers: Any = (),
    *,
    query: bytes = b"",
    client: tuple[str, int] = ("127.0.0.1", 50000),
) -> dict[str, Any]:
    """An ASGI HTTP scope for the project's app, as a server would pass it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": list(headers),
        "client": client,
        "server": ("testserver", 80),
    }


async def asgi_get(path: str) -> tuple[int, dict[str, Any]]:
    """GET through the project's real ASGI application (not the test client).

    The test client disconnects ``close_old_connections`` from ``request_finished``,
    so database connections opened by its per-request threads are never closed.
    """
    from asgiref.testing import ApplicationCommunicator

    from genestory.asgi import application

    scope = http_scope("GET", path, [(b"host", b"testserver")])
    app = ApplicationCommunicator(application, scope)
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await app.receive_output(5)
    body = b""
    while True:
        message = await app.receive_output(5)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await app.wait(5)
    return int(start["status"]), json.loads(body)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_test_url() -> str:
    """The real Redis the shared-queue tests use (they skip, or fail in CI, without it)."""
    return redis_url()


@pytest.fixture
async def redis_test_prefix(redis_test_url: str) -> AsyncIterator[str]:
    """A queue of the test's own on that Redis: its keys are deleted afterwards."""
    async for prefix in redis_prefix(redis_test_url):
        yield prefix
