"""One client floods the queue; does a normal guest still get answers in time?

One slot, answers of ``ANSWER_SEC``, the default per-client cap. A normal guest
(from 127.0.0.3) asks once a second and times each answer, first alone, then
while a flooding client (from 127.0.0.2) keeps ``--flood`` requests in flight
in a loop, each sent again as soon as it is answered or refused. Alone and
flooded phases alternate on one server, so the ratio compares the same guest
on the same machine in one run.

Target: the guest's time to answer with the flood <= (cap + 1) x its time
without it, + 20 % — at most the cap's worth of the flooder's requests ahead
of it, plus its own.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

from bench.server import BenchServer

CHAT = "/api/v1/guest/chat"
ANSWER_SEC = 0.2
CAP = 3
FLOODER, GUEST = "127.0.0.2", "127.0.0.3"


class Client:
    """A keep-alive HTTP/1.1 connection from one source address."""

    def __init__(self, port: int, source: str) -> None:
        self.port, self.source = port, source
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ask(self, query: str) -> int:
        """POST a question and read the whole answer (or refusal); the status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=(self.source, 0), limit=2**20
            )
        assert self.reader is not None
        body = json.dumps({"query": query}).encode()
        self.writer.write(
            (
                f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head:
            buffer = b""
            while not buffer.endswith(b"0\r\n\r\n"):
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("server closed the stream")
                buffer += data
        else:
            await self.reader.readexactly(int(head.split(b"content-length: ")[1].split(b"\r\n")[0]))
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Flood:
    """``width`` requests from one address, each sent again once answered or refused."""

    def __init__(self, port: int, width: int) -> None:
        self.clients = [Client(port, FLOODER) for _ in range(width)]
        self.counts: dict[int, int] = {}
        self._stop = asyncio.Event()

    async def _loop(self, client: Client) -> None:
        while not self._stop.is_set():
            try:
                status = await client.ask(f"flood sleep={ANSWER_SEC} chunks=1")
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                client.close()
                status = 0
            self.counts[status] = self.counts.get(status, 0) + 1

    async def run_for(self, seconds: float) -> None:
        tasks = [asyncio.ensure_future(self._loop(c)) for c in self.clients]
        await asyncio.sleep(seconds)
        self._stop.set()
        # Requests in flight finish within a few answers; do not wait for them.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in self.clients:
            client.close()


async def guest_times(port: int, seconds: float) -> tuple[list[float], int]:
    """The guest asks every second for ``seconds``; its answer times and refusals."""
    times: list[float] = []
    refused = 0
    guest = Client(port, GUEST)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        status = await guest.ask(f"guest sleep={ANSWER_SEC} chunks=1")
        elapsed = time.perf_counter() - started
        if status == 200:
            times.append(elapsed)
        else:
            refused += 1
        await asyncio.sleep(max(0.0, 1.0 - elapsed))
    guest.close()
    return times, refused


async def measure(port: int, width: int, seconds: float, rounds: int) -> None:
    alone: list[float] = []
    flooded: list[float] = []
    refused = 0
    counts: dict[int, int] = {}
    await guest_times(port, 2)  # warm-up
    for _ in range(rounds):
        alone += (await guest_times(port, seconds))[0]
        flood = Flood(port, width)
        flooding = asyncio.ensure_future(flood.run_for(seconds + 1))
        await asyncio.sleep(0.5)  # let the flood fill its share first
        times, no = await guest_times(port, seconds)
        flooded += times
        refused += no
        await flooding
        for status, n in flood.counts.items():
            counts[status] = counts.get(status, 0) + n
        await asyncio.sleep(1.5)  # the flood's last requests drain
    base, with_flood = statistics.median(alone), statistics.median(flooded)
    bound = (CAP + 1) * 1.2
    ratio = with_flood / base
    print(f"  guest alone:      p50 {base * 1000:7.1f} ms  max {max(alone) * 1000:7.1f} ms")
    print(
        f"  guest with flood: p50 {with_flood * 1000:7.1f} ms  max {max(flooded) * 1000:7.1f} ms"
        f"  ({len(flooded)} answers, {refused} refused)"
    )
    flood_total = sum(counts.values())
    print(
        f"  flood: {flood_total} requests in {rounds * (seconds + 1):.0f} s: "
        + ", ".join(f"{n} x {s or 'error'}" for s, n in sorted(counts.items()))
    )
    print(
        f"  ratio {ratio:.2f}x (p50; max {max(flooded) / base:.2f}x)   target <= {bound:.1f}x "
        f"((cap {CAP} + 1) x 1.2)  {'PASS' if ratio <= bound else 'FAIL'}"
    )


def flood(width: int = 200, seconds: float = 10.0, rounds: int = 2) -> None:
    """The ``flood`` scenario."""
    print(
        f"flood: 1 slot, {ANSWER_SEC} s answers, cap {CAP}; one client keeps {width} requests "
        f"in flight; a guest asks every second ({rounds} x {seconds:.0f} s alone, then flooded)"
    )
    settings = {
        "GUEST_WORKFLOW": "tests.scripted.ScriptedWorkflow",
        "GUEST_MAX_CONCURRENT_REQUESTS": "1",
        "GUEST_MAX_REQUESTS_PER_CLIENT": str(CAP),
        "GUEST_HISTORY_ENABLED": "false",
    }
    with BenchServer(settings) as server:
        asyncio.run(measure(server.port, width, seconds, rounds))
