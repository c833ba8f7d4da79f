"""The history writer: finished requests go to the database in the background.

Requests never wait for it. Records are buffered in memory, written in batches
(by count and time) with bulk inserts in the writer's own thread, and the
table is pruned after each batch. While the database is down or locked the
writer keeps a bounded buffer (oldest dropped first, counted), retries with
backoff, logs once per outage, and catches up when the database is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections, transaction

from .conf import app_settings
from .core.records import RequestRecord

logger = logging.getLogger("guest_queue")

MAX_BACKOFF_SEC = 30.0
FLUSH_TIMEOUT_SEC = 10.0


def keyed_hash(text: str) -> str:
    """HMAC-SHA-256 of ``text`` under the site's SECRET_KEY: comparable, not reversible."""
    return hmac.new(settings.SECRET_KEY.encode(), text.encode(), hashlib.sha256).hexdigest()


def _when(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


#: Name prefix of the writer's thread, which closes its connection after every batch.
WRITER_THREAD = "guest-queue-history"


class HistoryWriter:
    """Batches finished records into ``GuestRequest`` rows; owned by the queue manager."""

    def __init__(self) -> None:
        self.batch_size: int = app_settings.HISTORY_BATCH_SIZE
        self.interval: float = float(app_settings.HISTORY_FLUSH_SEC)
        self.buffer_limit: int = app_settings.HISTORY_BUFFER_SIZE
        self.keep: int = app_settings.HISTORY_LIMIT
        self.store_query: bool = app_settings.HISTORY_STORE_QUERY
        self.database: str = app_settings.HISTORY_DATABASE
        self.server = f"{socket.gethostname()}:{os.getpid()}"[:128]
        self.dropped = 0
        self.written = 0
        self._buffer: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=WRITER_THREAD)
        self._failing = False
        self._closed = False

    def add(self, record: RequestRecord) -> None:
        """Queue a finished record for writing (called on the event loop; never blocks)."""
        self._buffer.append(self.row(record))
        self._trim()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    def row(self, record: RequestRecord) -> dict[str, Any]:
        """The ``GuestRequest`` fields for a record."""
        return {
            "request_id": uuid.UUID(record.request_id),
            "status": record.status.value,
            "error_code": (record.error_code or "")[:64],
            "error_message": (record.error_message or "")[:500],
            "cached": record.cached,
            "arrival_position": record.arrival_position,
            "created_at": _when(record.created_at),
            "started_at": _when(record.started_at),
            "finished_at": _when(record.finished_at),
            "wait_ms": record.wait_ms,
            "processing_ms": record.processing_ms,
            "query": record.query if self.store_query else "",
            "query_length": len(record.query),
            "query_hash": keyed_hash(record.query),
            "answer_preview": record.answer_preview[:500],
            "client_hash": record.client_hint or "",
            "server": self.server,
        }

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def _trim(self) -> None:
        while len(self._buffer) > self.buffer_limit:
            self._buffer.popleft()
            self.dropped += 1

    async def _run(self) -> None:
        backoff = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
            if len(self._buffer) < self.batch_size:
                await asyncio.sleep(self.interval)  # let a batch gather
            batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), 500))]
            try:
                await loop.run_in_executor(self._executor, self._write, batch)
            except asyncio.CancelledError:
                # Closing: the batch goes back for close() to write (a duplicate is ignored).
                self._buffer.extendleft(reversed(batch))
                raise
            except DatabaseError as exc:
                self._buffer.extendleft(reversed(batch))
                self._trim()
                if not self._failing:
                    logger.error("Request history not written (%s); buffering, will retry", exc)
                    self._failing = True
                backoff = min(MAX_BACKOFF_SEC, backoff * 2 or 0.5)
                await asyncio.sleep(backoff)
            else:
                if self._failing:
                    logger.warning("Request history written again; %d dropped", self.dropped)
                    self._failing = False
                backoff = 0.0

    def _write(self, rows: list[dict[str, Any]]) -> None:
        from .models import GuestRequest

        db = self.database
        try:
            with transaction.atomic(using=db):
                # ignore_conflicts: a batch retried after an unclear failure is never written twice.
                GuestRequest.objects.using(db).bulk_create(
                    [GuestRequest(**row) for row in rows], ignore_conflicts=True
                )
                GuestRequest.objects.using(db).prune(self.keep)
        finally:
            # One connection per batch (at most a few per second): nothing stale to recover
            # after an outage, no idle session held between batches, pooler-friendly.
            connections[db].close()
        self.written += len(rows)

    async def close(self) -> None:
        """Write what is buffered (bounded in time), then stop the writer and its thread."""
        if self._closed:
            return
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT_SEC):
                while self._buffer:
                    batch = list(self._buffer)
                    try:
                        await loop.run_in_executor(self._executor, self._write, batch)
                    except DatabaseError:
                        await asyncio.sleep(0.5)
                        continue
                    self._buffer.clear()
        except TimeoutError:
            logger.error("Request history: %d rows not written at shutdown", len(self._buffer))
        self._closed = True
        self._executor.shutdown(wait=False)

    def abandon(self) -> None:
        """Stop without writing: for a writer whose event loop is gone."""
        if self._closed:
            return
        self._closed = True
        if self._buffer:
            logger.warning("Request history: %d rows abandoned", len(self._buffer))
        # _write closes its connection after every batch: the thread holds nothing to close.
        self._executor.shutdown(wait=False)
