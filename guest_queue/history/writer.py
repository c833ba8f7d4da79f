"""The history writer: finished requests go to the database in the background.

Requests never wait for it. Records are buffered in memory, written in batches
(by count and time) with bulk inserts in the writer's own thread, and the
table is pruned after each batch. While the database is down or locked the
writer keeps a bounded buffer (oldest dropped first, counted), retries with
backoff, logs once per outage, and catches up when the database is back.

Every error is caught. A batch refused for its data (a NUL character on
PostgreSQL, say) is written row by row: the rows it accepts go in, and a row
refused ``MAX_ROW_TRIES`` times is dropped (logged, counted as ``rejected``)
rather than blocking every row behind it. Writes run on daemon threads, so a
database that hangs cannot keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from django.db import DataError, IntegrityError, connections, transaction

from ..conf import app_settings
from ..core.records import RequestRecord
from ..core.supervise import supervised
from ..guests.hashing import QUERY, keyed_hash
from .threads import in_daemon_thread

logger = logging.getLogger("guest_queue")

MAX_BACKOFF_SEC = 30.0
#: Rows per bulk insert.
BATCH_SIZE = 50
#: Rows kept while the database is unreachable; beyond, the oldest are dropped (and
#: counted in ``history_dropped``). Enough for minutes of a busy site, small in memory.
BUFFER_SIZE = 10_000
#: Times a row alone may be refused before it is dropped.
MAX_ROW_TRIES = 3
#: Errors about the rows themselves (bad data: a NUL character on PostgreSQL, say). Any
#: other error (connection lost, table missing, a bug) keeps every row buffered for a retry.
ROW_REFUSED = (DataError, IntegrityError, ValueError, TypeError)


def _when(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class HistoryWriter:
    """Batches finished records into ``GuestRequest`` rows; owned by the queue manager."""

    def __init__(self) -> None:
        self.batch_size = BATCH_SIZE
        self.interval = float(app_settings.HISTORY_FLUSH_SEC)
        self.buffer_limit = BUFFER_SIZE
        self.keep: int = app_settings.HISTORY_LIMIT
        self.store_query: bool = app_settings.HISTORY_STORE_QUERY
        self.database: str = app_settings.HISTORY_DATABASE
        self.flush_timeout = float(app_settings.HISTORY_FLUSH_TIMEOUT_SEC)
        self.server = f"{socket.gethostname()}:{os.getpid()}"[:128]
        self.dropped = 0
        self.rejected = 0
        self.written = 0
        self._buffer: deque[dict[str, Any]] = deque()
        #: How often the database refused each row written alone, by request id.
        self._tries: dict[uuid.UUID, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._closed = False

    def add(self, record: RequestRecord) -> None:
        """Queue a finished record for writing (called on the event loop; never blocks)."""
        self._buffer.append(self.row(record))
        self._trim()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                supervised("history writer", self._run)
            )
        self._wake.set()

    def row(self, record: RequestRecord) -> dict[str, Any]:
        """The ``GuestRequest`` fields for a record."""
        return {
            "request_id": uuid.UUID(record.request_id),
            "status": record.status.value,
            "error_code": (record.error_code or "")[:64],
            # The error text and the answer often restate the question: kept only with it.
            "error_message": (record.error_message or "")[:500] if self.store_query else "",
            "cached": record.cached,
            "arrival_position": record.arrival_position,
            "created_at": _when(record.created_at),
            "started_at": _when(record.started_at),
            "finished_at": _when(record.finished_at),
            "wait_ms": record.wait_ms,
            "processing_ms": record.processing_ms,
            "query": record.query if self.store_query else "",
            "query_length": len(record.query),
            "query_hash": keyed_hash(QUERY, record.query),
            "answer_preview": record.answer_preview[:500] if self.store_query else "",
            "client_hash": record.client_hint or "",
            "server": self.server,
        }

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def _trim(self) -> None:
        while len(self._buffer) > self.buffer_limit:
            row = self._buffer.popleft()
            self._tries.pop(row["request_id"], None)
            self.dropped += 1

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
            if len(self._buffer) < self.batch_size:
                await asyncio.sleep(self.interval)  # let a batch gather
            batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), 500))]
            try:
                refused = await self._write_in_thread(batch)
            except asyncio.CancelledError:
                # Closing: the batch goes back for close() to write (a duplicate is ignored).
                self._buffer.extendleft(reversed(batch))
                raise
            except Exception as exc:
                self._buffer.extendleft(reversed(batch))
                self._trim()
                if not self._failing:
                    logger.error("Request history not written (%s); buffering, will retry", exc)
                    self._failing = True
                backoff = min(MAX_BACKOFF_SEC, backoff * 2 or 0.5)
                await asyncio.sleep(backoff)
                continue
            if self._failing:
                logger.warning("Request history written again; %d dropped", self.dropped)
                self._failing = False
            backoff = 0.0
            if refused:
                self._retry_later(refused)
                await asyncio.sleep(self.interval)

    def _retry_later(self, refused: list[dict[str, Any]]) -> None:
        """Put refused rows back at the head, or drop those refused too often."""
        kept = []
        for row in refused:
            rid = row["request_id"]
            tries = self._tries.get(rid, 0) + 1
            if tries >= MAX_ROW_TRIES:
                self._tries.pop(rid, None)
                self.rejected += 1
                logger.error(
                    "Request history: the database refused the row of request %s %d times; dropped",
                    rid,
                    tries,
                )
            else:
                self._tries[rid] = tries
                kept.append(row)
        self._buffer.extendleft(reversed(kept))

    async def _write_in_thread(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write ``rows`` off the loop; the rows refused one by one come back."""
        refused = await in_daemon_thread(lambda: self._write(rows), "guest-queue-history")
        self.written += len(rows) - len(refused)
        if self._tries:
            refused_ids = {row["request_id"] for row in refused}
            for row in rows:
                if row["request_id"] not in refused_ids:
                    self._tries.pop(row["request_id"], None)
        return refused

    def _write(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert the rows (one batch, else one by one); return those refused alone."""
        try:
            try:
                self._insert(rows)
                return []
            except ROW_REFUSED:
                if len(rows) == 1:
                    return rows
            refused = []
            for row in rows:
                try:
                    self._insert([row])
                except ROW_REFUSED:
                    refused.append(row)
            return refused
        finally:
            # One connection per batch (at most a few per second): nothing stale to recover
            # after an outage, no idle session held between batches, pooler-friendly.
            connections[self.database].close()

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        from ..models import GuestRequest

        db = self.database
        with transaction.atomic(using=db):
            # ignore_conflicts: a batch retried after an unclear failure is never written twice.
            GuestRequest.objects.using(db).bulk_create(
                [GuestRequest(**row) for row in rows], ignore_conflicts=True
            )
            GuestRequest.objects.using(db).prune(self.keep)

    async def close(self) -> None:
        """Write what is buffered (bounded in time), then stop the writer and its thread."""
        if self._closed:
            return
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            async with asyncio.timeout(self.flush_timeout):
                while self._buffer:
                    batch = list(self._buffer)
                    try:
                        refused = await self._write_in_thread(batch)
                    except Exception:
                        await asyncio.sleep(0.5)
                        continue
                    self._buffer.clear()
                    self._retry_later(refused)
        except TimeoutError:
            logger.error("Request history: %d rows not written at shutdown", len(self._buffer))
        self._closed = True

    def abandon(self) -> None:
        """Stop without writing: for a writer whose event loop is gone."""
        if self._closed:
            return
        self._closed = True
        if self._buffer:
            logger.warning("Request history: %d rows abandoned", len(self._buffer))
