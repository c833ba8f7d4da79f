"""Prometheus metrics: the collectors and the ``metrics`` endpoint (extra ``prometheus``).

Outcomes, cache hits and the four histograms come from the manager's
listener (each finished ``RequestRecord``); refusals from ``count_rejected``,
called wherever a request is refused. Under several worker processes the
figures add up through prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``). The gauges are read at scrape time: the whole
shared queue's with the ``redis`` backend, this process's otherwise (in
multiprocess mode each process refreshes its own every second, summed as
``livesum``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..conf import app_settings
from ..core.records import RequestRecord

if TYPE_CHECKING:
    from ..core.manager import QueueManager

try:
    import prometheus_client
    from prometheus_client import multiprocess
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector, CollectorRegistry

    INSTALLED = True
except ImportError:  # tests/test_metrics.py runs a process without it
    INSTALLED = False

logger = logging.getLogger("guest_queue")

NAMESPACE = "guest_queue"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How often, in multiprocess mode, each process writes its own gauges.
GAUGE_REFRESH_SEC = 1.0
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
PROCESSING_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
FIRST_CHUNK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
#: Actual minus predicted wait: negative when the guest was admitted sooner than announced.
ESTIMATE_ERROR_BUCKETS = (
    -60, -30, -10, -5, -2, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 2, 5, 10, 30, 60,
)  # fmt: skip
GAUGES = {
    "waiting": "Requests waiting for a slot.",
    "active": "Requests holding a slot (answering).",
    "slots": "Requests that may be answered at once: the limit in use (fixed, or adapted).",
}


def available() -> bool:
    """Whether prometheus_client is installed (the ``prometheus`` extra)."""
    return INSTALLED


def multiprocess_mode() -> bool:
    """Whether figures are shared between worker processes through files."""
    return bool(os.environ.get(MULTIPROC_ENV))


class _Metrics:
    """The counters and histograms, created once per process on first use."""

    def __init__(self) -> None:
        # Not in the default registry: the endpoint builds its own per scrape.
        self.registry = CollectorRegistry(auto_describe=True)
        reg = None if multiprocess_mode() else self.registry
        c, h = prometheus_client.Counter, prometheus_client.Histogram
        self.requests = c(
            "requests",
            "Requests by outcome; refused ones (outcome=rejected) with their code.",
            ["outcome", "code"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self.cache_hits = c(
            "cache_hits",
            "Requests answered from the answer cache.",
            namespace=NAMESPACE,
            registry=reg,
        )
        self.history_dropped = c(
            "history_dropped",
            "History rows dropped while the database was unreachable.",
            namespace=NAMESPACE,
            registry=reg,
        )
        self.wait = h(
            "wait_seconds",
            "From arrival to a slot (or the cache's answer).",
            namespace=NAMESPACE,
            buckets=WAIT_BUCKETS,
            registry=reg,
        )
        self.processing = h(
            "processing_seconds",
            "From the slot to the end of the answer (answers from the workflow only).",
            namespace=NAMESPACE,
            buckets=PROCESSING_BUCKETS,
            registry=reg,
        )
        self.first_chunk = h(
            "first_chunk_seconds",
            "From arrival to the first answer chunk.",
            namespace=NAMESPACE,
            buckets=FIRST_CHUNK_BUCKETS,
            registry=reg,
        )
        self.estimate_error = h(
            "wait_estimate_error_seconds",
            "Actual minus first estimated wait of each request that waited in line, "
            "observed when it is admitted.",
            namespace=NAMESPACE,
            buckets=ESTIMATE_ERROR_BUCKETS,
            registry=reg,
        )
        self._gauges: dict[str, prometheus_client.Gauge] | None = None

    @property
    def gauges(self) -> dict[str, prometheus_client.Gauge]:
        """Multiprocess mode with local queues only: each process's own figures, summed.

        Created on first use: in multiprocess mode a gauge exists for every process
        (in the shared directory) from its creation, and a shared queue's gauges
        come from the queue itself instead.
        """
        if self._gauges is None:
            self._gauges = {
                name: prometheus_client.Gauge(
                    name, text, namespace=NAMESPACE, registry=None, multiprocess_mode="livesum"
                )
                for name, text in GAUGES.items()
            }
        return self._gauges


_metrics: _Metrics | None = None


def _get() -> _Metrics | None:
    global _metrics
    if not INSTALLED:
        return None
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


def enabled() -> bool:
    """Whether metrics are collected: turned on and prometheus_client installed."""
    return app_settings.METRICS_ENABLED is True and INSTALLED


def count_rejected(code: str) -> None:
    """Count a refused request (``outcome="rejected"``) under its refusal code."""
    if enabled() and (m := _get()) is not None:
        m.requests.labels(outcome="rejected", code=code).inc()


def observe(record: RequestRecord) -> None:
    """Count a finished request and time it."""
    m = _get()
    if m is None:
        return
    m.requests.labels(outcome=record.status.value, code="").inc()
    if record.cached:
        m.cache_hits.inc()
    if record.started_mono is not None:
        m.wait.observe(max(0.0, record.started_mono - record.created_mono))
    if not record.cached and record.started_mono is not None and record.finished_mono is not None:
        m.processing.observe(max(0.0, record.finished_mono - record.started_mono))
    if record.first_chunk_mono is not None:
        m.first_chunk.observe(max(0.0, record.first_chunk_mono - record.created_mono))
    error = record.estimate_error_sec
    if error is not None:
        m.estimate_error.observe(error)


class DropCounter(Protocol):
    """What the metrics read of the history writer."""

    @property
    def dropped(self) -> int: ...


class ManagerMetrics:
    """Feeds one manager's finished requests (and history drops) into the metrics."""

    def __init__(self, manager: QueueManager, history: DropCounter | None = None) -> None:
        self.manager = manager
        self.history = history
        self._dropped_seen = 0
        self._refresher: asyncio.Task[None] | None = None

    def finished(self, record: RequestRecord) -> None:
        """The manager's listener: one finished request."""
        observe(record)
        self.sync_dropped()
        if self._refresher is None:
            self.start_refresher()

    def sync_dropped(self) -> None:
        """Add the history rows dropped since the last look to the counter."""
        m = _get()
        if m is None or self.history is None:
            return
        dropped = self.history.dropped
        if dropped > self._dropped_seen:
            m.history_dropped.inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped

    def start_refresher(self) -> None:
        """In multiprocess mode with a local queue, keep this process's gauges current."""
        if not multiprocess_mode() or self.manager.admission.name != "local":
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._refresher is None:
            self._refresher = self.manager.stopper.spawn(self._refresh())
            self.manager.add_closer(self._forget)

    async def _refresh(self) -> None:
        while True:
            self.write_gauges(self.manager.status())
            await asyncio.sleep(GAUGE_REFRESH_SEC)

    def write_gauges(self, figures: dict[str, Any]) -> None:
        m = _get()
        if m is None:
            return
        for name, value in _gauge_values(figures).items():
            m.gauges[name].set(value)

    async def _forget(self) -> None:
        """A closed queue holds nothing: its gauges leave the sum."""
        self.write_gauges({})


def _gauge_values(figures: dict[str, Any]) -> dict[str, float]:
    return {
        "waiting": float(figures.get("queue_size") or 0),
        "active": float(figures.get("active_requests") or 0),
        "slots": float(figures.get("max_concurrent_requests") or 0),
    }


def attach(manager: QueueManager, history: DropCounter | None = None) -> None:
    """Hook a new manager into the metrics, when they are enabled."""
    if not enabled():
        return
    global _feed
    feed = ManagerMetrics(manager, history)
    manager.add_listener(feed.finished)
    _feed = feed
    feed.start_refresher()


#: The feed of this process's manager (runtime keeps one manager per process).
_feed: ManagerMetrics | None = None


if INSTALLED:

    class _QueueGauges(Collector):
        """The three queue gauges, as figures read for this scrape."""

        def __init__(self, figures: dict[str, Any]) -> None:
            self.values = _gauge_values(figures)

        def collect(self) -> Iterator[Metric]:
            for name, text in GAUGES.items():
                yield GaugeMetricFamily(f"{NAMESPACE}_{name}", text, value=self.values[name])

    class _Collected(Collector):
        """Another registry's metrics, re-collected into the per-scrape registry."""

        def __init__(self, source: CollectorRegistry) -> None:
            self.source = source

        def collect(self) -> Iterator[Metric]:
            yield from self.source.collect()


async def exposition(manager: QueueManager) -> bytes:
    """The metrics in Prometheus's text format, as this scrape sees them."""
    m = _get()
    assert m is not None
    feed = _feed if _feed is not None and _feed.manager is manager else None
    if feed is not None:
        feed.sync_dropped()
        feed.start_refresher()
    registry = CollectorRegistry(auto_describe=True)
    shared = manager.admission.name != "local"
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        if feed is not None and not shared:
            feed.write_gauges(manager.status())
    else:
        registry.register(_Collected(m.registry))
    if shared or not multiprocess_mode():
        # The shared queue's line and slots are the same whichever process is asked.
        figures = await manager.shared_status() if shared else manager.status()
        registry.register(_QueueGauges(figures))
    data: bytes = prometheus_client.generate_latest(registry)
    return data
