"""A lean HTTP/1.1 SSE load client for benchmarks.

Written on raw asyncio streams rather than httpx so that, on a two-core
machine, the load generator costs as little CPU as possible and the figures
measure the server. It speaks just enough HTTP: one keep-alive connection per
client, a JSON POST, and a chunked ``text/event-stream`` response read to its end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

END_OF_CHUNKED_BODY = b"0\r\n\r\n"


@dataclass
class Result:
    started: float
    first_event: float | None = None
    first_chunk: float | None = None
    finished: float | None = None
    status: int = 0
    body: bytes = b""

    @property
    def latency_ms(self) -> float:
        assert self.finished is not None
        return (self.finished - self.started) * 1000

    @property
    def first_event_ms(self) -> float:
        assert self.first_event is not None
        return (self.first_event - self.started) * 1000

    @property
    def first_chunk_ms(self) -> float:
        assert self.first_chunk is not None
        return (self.first_chunk - self.started) * 1000


@dataclass
class Connection:
    url: str
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    host: str = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**20)

    def request(self, path: str, query: str) -> bytes:
        body = json.dumps({"query": query}).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def post_sse(self, path: str, query: str, on_data: object = None) -> Result:
        """Send one request and read its whole streamed response."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        result = Result(started=time.perf_counter())
        self.writer.write(self.request(path, query))
        head = await self.reader.readuntil(b"\r\n\r\n")
        result.status = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" not in head.lower():
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            result.body = await self.reader.readexactly(length)
            result.finished = time.perf_counter()
            return result
        buffer = b""
        while not buffer.endswith(END_OF_CHUNKED_BODY):
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("server closed the stream")
            if result.first_event is None and b"data:" in data:
                result.first_event = time.perf_counter()
            if result.first_chunk is None and b'"answer_chunk"' in data:
                result.first_chunk = time.perf_counter()
            if callable(on_data):
                on_data(data)
            buffer += data
        result.finished = time.perf_counter()
        result.body = buffer
        return result

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def run_load(
    url: str, path: str, query: str | Callable[[], str], clients: int, duration: float
) -> list[Result]:
    """``clients`` connections, each sending requests back to back for ``duration`` seconds.

    ``query`` is a question, or a function returning a new one for every request.
    """
    results: list[Result] = []
    stop_at = time.perf_counter() + duration

    async def client() -> None:
        conn = Connection(url)
        try:
            while time.perf_counter() < stop_at:
                result = await conn.post_sse(path, query() if callable(query) else query)
                if result.status != 200:
                    raise RuntimeError(f"HTTP {result.status}: {result.body[:200]!r}")
                results.append(result)
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return results
