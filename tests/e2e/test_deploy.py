"""The deployment recipe in deploy/, run for real: nginx in front of two uvicorn workers.

nginx (Debian's package) runs this checkout's ``deploy/nginx/genestory.conf`` with
only its ports and listen address rewritten; the workers run the ``ExecStart``
command of ``deploy/systemd/genestory@.service`` and share the queue in Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.utils.crypto import salted_hmac

from guest_queue.guests.hashing import CLIENT

from ..services import missing
from .conftest import E2E_SECRET_KEY, ROOT, Server, client_at, free_port
from .test_servers import names, stream_events

DEPLOY = ROOT / "deploy"
SITE = DEPLOY / "nginx" / "genestory.conf"
UNIT = DEPLOY / "systemd" / "genestory@.service"
TERMINAL = {"workflow_complete", "error", "timeout"}


def nginx_binary() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if Path(found).exists():
        return found
    missing("nginx", "nginx is not installed (apt-get install nginx)")


def documented_uvicorn_args() -> list[str]:
    """The systemd unit's ExecStart, after the uvicorn executable."""
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0].endswith("/uvicorn")
    return argv[1:]


class Worker(Server):
    """A uvicorn worker started with the documented command."""

    def command(self, kind: str) -> list[str]:
        port = str(self.port)
        return ["-m", "uvicorn", *(arg.replace("%i", port) for arg in documented_uvicorn_args())]


class Nginx:
    """nginx in the foreground with the site config, its pid, logs and temp files under tmp."""

    def __init__(self, tmp: Path, upstreams: list[int]) -> None:
        self.dir = tmp / "nginx"
        self.dir.mkdir()
        # A port picked here can still be taken before nginx binds it (by another test run
        # on this machine): then nginx starts again on another one.
        for attempt in range(1, 6):
            if self._start(free_port(), upstreams):
                return
            assert attempt < 5 and "Address already in use" in self.errors(), self.errors()

    def _start(self, port: int, upstreams: list[int]) -> bool:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        ports = iter(upstreams)
        site, servers = re.subn(
            r"server 127\.0\.0\.1:\d+",
            lambda _: f"server 127.0.0.1:{next(ports)}",
            SITE.read_text(),
        )
        site, listens = re.subn(r"listen 80;", f"listen 127.0.0.1:{self.port};", site)
        assert servers == len(upstreams) and listens == 1
        temp = "\n".join(
            f"{kind}_temp_path {self.dir / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        config = self.dir / "nginx.conf"
        config.write_text(
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"daemon off;\nworker_processes 1;\npid {self.dir / 'nginx.pid'};\n"
            + f"error_log {self.dir / 'error.log'} info;\n"
            + "events { worker_connections 512; }\n"
            + f"http {{\naccess_log {self.dir / 'access.log'};\n{temp}\n{site}\n}}\n"
        )
        args = ["-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(config)]
        self.process = subprocess.Popen([nginx_binary(), *args])
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/api/v1/guest/health/live", timeout=1).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"nginx did not answer:\n{self.errors()}")
            time.sleep(0.05)

    def errors(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Deployment:
    def __init__(self, workers: list[Worker], nginx: Nginx) -> None:
        self.workers = workers
        self.nginx = nginx
        self.url = nginx.url


@pytest.fixture
def deployment(tmp_path: Path, redis_test_url: str, redis_test_prefix: str) -> Iterator[Deployment]:
    nginx_binary()
    env = {
        "GUEST_QUEUE_BACKEND": "redis",
        "GUEST_QUEUE_REDIS_URL": redis_test_url,
        "GUEST_QUEUE_REDIS_PREFIX": redis_test_prefix,
        "GUEST_MAX_CONCURRENT_REQUESTS": "10",
        "GUEST_SHUTDOWN_GRACE_SEC": "20",
        "GUEST_HISTORY_FLUSH_SEC": "0.1",
    }
    workers: list[Worker] = []
    nginx = None
    try:
        workers += [Worker("uvicorn", env, tmp_path), Worker("uvicorn", env, tmp_path)]
        nginx = Nginx(tmp_path, [w.port for w in workers])
        yield Deployment(workers, nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        for worker in workers:
            worker.stop()


def test_documented_commands_drain_gracefully() -> None:
    args = documented_uvicorn_args()
    assert args[args.index("--timeout-graceful-shutdown") + 1] == "35"
    assert "--proxy-headers" in args and "--forwarded-allow-ips=127.0.0.1" in args
    assert args[args.index("--lifespan") + 1] == "on"
    # Request ids (capabilities: they read and cancel answers) stay out of access logs.
    assert "--no-access-log" in args
    serve = (ROOT / "Makefile").read_text()
    assert "--no-access-log" in serve
    assert "--timeout-graceful-shutdown $(GRACEFUL_TIMEOUT)" in serve
    assert "GRACEFUL_TIMEOUT ?= 35" in serve
    assert "GUEST_SHUTDOWN_GRACE_SEC=30" in (DEPLOY / "genestory.env.example").read_text()
    assert re.search(r"^TimeoutStopSec=45$", UNIT.read_text(), re.M)


async def timed_events(client: httpx.AsyncClient, url: str, query: str) -> list[tuple[float, str]]:
    """(seconds since the request was sent, event name) for each event of one stream."""
    started = time.perf_counter()
    arrivals = []
    async with client.stream("POST", f"{url}/api/v1/guest/chat", json={"query": query}) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                arrivals.append((time.perf_counter() - started, json.loads(line[6:])["event"]))
    return arrivals


async def test_events_pass_nginx_as_they_are_produced(deployment: Deployment) -> None:
    direct = deployment.workers[0].url
    firsts: dict[str, list[float]] = {direct: [], deployment.url: []}
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(7):
            for url in firsts:
                events = await timed_events(client, url, "sleep=0.3 chunks=1")
                assert events[0][1] == "queued" and events[-1][1] == "workflow_complete"
                firsts[url].append(events[0][0])
        # The first event is sent at once, the answer 0.3 s later: a buffering proxy
        # would hold the first event back until then.
        extra = statistics.median(firsts[deployment.url]) - statistics.median(firsts[direct])
        assert extra < 0.1, firsts
        slow = await timed_events(client, deployment.url, "chunks=3 delay=0.4")
    first_chunk = next(t for t, name in slow if name == "answer_chunk")
    assert slow[-1][1] == "workflow_complete" and slow[-1][0] - first_chunk > 0.6, slow


async def test_guest_address_reaches_the_app_through_proxy_headers(
    deployment: Deployment,
) -> None:
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.5")
    async with httpx.AsyncClient(transport=transport, timeout=30) as client:
        # A forged header from the guest is not believed: nginx appends the real peer.
        answer = await client.post(
            f"{deployment.url}/api/v1/guest/chat/simple",
            json={"query": "chunks=1"},
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
    assert answer.status_code == 200, answer.text
    request_id = uuid.UUID(answer.json()["request_id"]).hex
    db = sqlite3.connect(deployment.workers[0].db_path)
    try:
        deadline = time.monotonic() + 10
        row = None
        while row is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            row = db.execute(
                "SELECT client_hash FROM guest_queue_guestrequest WHERE request_id = ?",
                (request_id,),
            ).fetchone()
    finally:
        db.close()
    assert row is not None, "the request never reached the history table"
    # The keyed hash of the address nginx saw, under the servers' own key.
    expected = salted_hmac(CLIENT, "127.0.0.5", secret=E2E_SECRET_KEY, algorithm="sha256")
    assert row[0] == expected.hexdigest()[:32]


async def process_figures(client: httpx.AsyncClient, worker: Server) -> dict[str, Any]:
    """This worker's own figures (``queue/status`` asked directly, not through nginx)."""
    status = (await client.get(f"{worker.url}/api/v1/guest/queue/status")).json()
    return dict(status["process"])


async def test_rolling_restart_loses_no_accepted_request(
    deployment: Deployment, tmp_path: Path
) -> None:
    first, second = deployment.workers
    async with httpx.AsyncClient(timeout=60) as client:
        in_flight = [
            asyncio.ensure_future(stream_events(client, deployment.url, "chunks=8 delay=0.4"))
            for _ in range(6)
        ]
        deadline = time.monotonic() + 10
        while True:
            figures = [await process_figures(client, w) for w in (first, second)]
            if all(f["active_requests"] >= 1 for f in figures):
                break
            assert time.monotonic() < deadline, "the streams did not reach both workers"
            await asyncio.sleep(0.05)
        served_before = (await process_figures(client, second))["total_requests"]
        first.process.send_signal(signal.SIGTERM)

        async def during(delay: float) -> list[dict[str, Any]]:
            await asyncio.sleep(delay)
            return await stream_events(client, deployment.url, "chunks=2")

        arrivals = [asyncio.ensure_future(during(0.15 * i)) for i in range(10)]
        exit_code = await asyncio.to_thread(first.process.wait, 30)
        assert exit_code in (0, -signal.SIGTERM), first.output()
        results = await asyncio.gather(*in_flight, *arrivals)
        # The other worker served every question asked while the first one restarted.
        served = (await process_figures(client, second))["total_requests"] - served_before
        assert served >= len(arrivals)
    for events in results:
        ends = [name for name in names(events) if name in TERMINAL]
        assert ends == ["workflow_complete"], names(events)
        assert names(events)[-1] == "workflow_complete"
    for events in results[: len(in_flight)]:
        assert names(events).count("answer_chunk") == 8
    first.stop()
    restarted = await asyncio.to_thread(
        Worker, "uvicorn-restarted", first.env, tmp_path, port=first.port
    )
    deployment.workers[0] = restarted
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(f"{restarted.url}/api/v1/guest/health")).status_code == 200
        after = await asyncio.gather(
            *(stream_events(client, deployment.url, "chunks=1") for _ in range(4))
        )
    assert all(names(events)[-1] == "workflow_complete" for events in after)


async def questions_served(deployment: Deployment) -> int:
    """Questions the workers accepted, both together (asked directly, not through nginx)."""
    async with httpx.AsyncClient(timeout=10) as client:
        figures = [await process_figures(client, w) for w in deployment.workers]
    return sum(int(f["total_requests"]) + int(f["rejected_requests"]) for f in figures)


def rate_limited_shape(response: httpx.Response, code: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert set(body) == {"error", "code", "retry_after"}, body
    assert body["code"] == code and body["retry_after"] == 1 and body["error"]


async def test_nginx_refuses_a_burst_of_questions_in_the_apis_json(
    deployment: Deployment,
) -> None:
    served_before = await questions_served(deployment)
    url = f"{deployment.url}/api/v1/guest/chat/simple"
    async with client_at("127.0.0.2") as flooder, client_at("127.0.0.6") as other:
        answers: list[httpx.Response] = []
        # 30 questions in three quick volleys of 10 (under the 20 connections an address
        # may hold): the rate is 2 a second with a burst of 20, so 21 pass, or 22 if a
        # half-second went by, and the rest are refused by nginx.
        for _ in range(3):
            answers += await asyncio.gather(
                *(flooder.post(url, json={"query": "chunks=1"}) for _ in range(10))
            )
        passed = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code != 200]
        assert 21 <= len(passed) <= 23, [a.status_code for a in answers]
        for answer in refused:
            rate_limited_shape(answer, "rate_limited")
        # The stream shares the count; another address does not.
        stream = await flooder.post(f"{deployment.url}/api/v1/guest/chat", json={"query": "x"})
        rate_limited_shape(stream, "rate_limited")
        assert (await other.post(url, json={"query": "chunks=1"})).status_code == 200
        # The refused questions never reached a worker.
        assert await questions_served(deployment) - served_before == len(passed) + 1
        # After Retry-After the flooder is served again.
        await asyncio.sleep(1)
        assert (await flooder.post(url, json={"query": "chunks=1"})).status_code == 200


def stalled(address: str, port: int, head: bytes) -> socket.socket:
    """A connection from ``address`` that sends ``head`` and then nothing."""
    sock = socket.socket()
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(head)
    return sock


def closed_after(sock: socket.socket, started: float) -> tuple[float, bytes]:
    """Read until nginx closes: (seconds since ``started``, what it sent)."""
    sock.settimeout(30)
    received = b""
    try:
        while part := sock.recv(65536):
            received += part
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return time.monotonic() - started, received


async def test_nginx_cuts_off_slow_clients_and_caps_connections_per_address(
    deployment: Deployment,
) -> None:
    port = deployment.nginx.port
    served_before = await questions_served(deployment)
    started = time.monotonic()
    # A question whose body never comes: nginx reads bodies before passing requests on.
    slow_body = stalled(
        "127.0.0.7",
        port,
        b"POST /api/v1/guest/chat HTTP/1.1\r\nHost: chat.example.com\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b'{"query": "',
    )
    slow_head = stalled("127.0.0.8", port, b"GET /api/v1/guest/health HTTP/1.1\r\nHost: x\r\n")
    # One address holding 20 requests open (their bodies never come either).
    held = [
        stalled(
            "127.0.0.3",
            port,
            f"POST /api/v1/guest/chat/{uuid.uuid4()}/cancel HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 10\r\n\r\n".encode(),
        )
        for _ in range(20)
    ]
    await asyncio.sleep(0.5)
    status = "/api/v1/guest/queue/status"
    async with client_at("127.0.0.3") as holder, client_at("127.0.0.4") as other:
        rate_limited_shape(await holder.get(f"{deployment.url}{status}"), "client_limit")
        assert (await other.get(f"{deployment.url}{status}")).status_code == 200
        # client_body_timeout / client_header_timeout (10 s without a byte): cut off.
        ends = await asyncio.gather(
            *(asyncio.to_thread(closed_after, s, started) for s in [slow_body, slow_head, *held])
        )
        for elapsed, received in ends:
            assert 9 < elapsed < 14, ends
            assert received == b"" or received.startswith(b"HTTP/1.1 408"), ends
        # Their places are free again, and no worker ever saw them.
        assert (await holder.get(f"{deployment.url}{status}")).status_code == 200
    assert await questions_served(deployment) == served_before


async def test_an_oversized_body_gets_a_json_413_through_nginx(deployment: Deployment) -> None:
    url = f"{deployment.url}/api/v1/guest/chat"
    headers = {"content-type": "application/json"}
    async with client_at("127.0.0.9") as client:
        for _ in range(3):
            # Above client_max_body_size (1m): nginx's 413, in the API's shape, read by a
            # client that writes all 3 MB before reading (nginx lingers, no reset).
            big = await client.post(url, content=b"x" * 3_000_000, headers=headers)
            assert big.status_code == 413 and big.json() == {
                "error": "The request body is too large.",
                "code": "body_too_large",
            }
            # Between GUEST_MAX_BODY_BYTES and 1m: the app's own 413.
            mid = await client.post(url, content=b"x" * 200_000, headers=headers)
            assert mid.status_code == 413 and mid.json()["code"] == "body_too_large"
            assert "65536" in mid.json()["error"]
