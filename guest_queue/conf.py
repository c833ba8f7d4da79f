"""The app's settings, in one place, read lazily so ``override_settings`` works.

A value read once is kept on ``app_settings`` until a ``GUEST_*`` setting changes
(Django's ``setting_changed``, which ``override_settings`` sends): a request reads
a dozen of them, and Django looks a setting the site leaves out up by raising and
catching an ``AttributeError`` each time.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from .core.config import DEFAULT_TIMEOUT_FALLBACK, QueueConfig

DEFAULTS: dict[str, Any] = {
    "GUEST_MAX_CONCURRENT_REQUESTS": 3,
    "GUEST_MAX_QUEUE_SIZE": 50,
    "GUEST_MAX_REQUESTS_PER_CLIENT": 3,
    "GUEST_CLIENT_KEY": None,
    "GUEST_RATE_LIMIT": None,
    "GUEST_REQUEST_TIMEOUT_SEC": 60,
    "GUEST_MAX_QUEUE_WAIT_SEC": None,
    "GUEST_WORKFLOW": "guest_queue.workflows.demo.DemoWorkflow",
    #: Keyword arguments for the workflow's constructor (each workflow documents its own).
    "GUEST_WORKFLOW_OPTIONS": {},
    "GUEST_HISTORY_LIMIT": 100,
    "GUEST_HISTORY_ENABLED": True,
    "GUEST_HISTORY_STORE_QUERY": True,
    "GUEST_HISTORY_BATCH_SIZE": 50,
    "GUEST_HISTORY_FLUSH_SEC": 0.5,
    "GUEST_HISTORY_BUFFER_SIZE": 10000,
    "GUEST_HISTORY_DATABASE": "default",
    "GUEST_HISTORY_LOOKUP_TIMEOUT_SEC": 2,
    "GUEST_HISTORY_FLUSH_TIMEOUT_SEC": 10,
    "GUEST_MAX_QUERY_CHARS": 2000,
    "GUEST_MAX_BODY_BYTES": 65536,
    "GUEST_SHUTDOWN_GRACE_SEC": 30,
    "GUEST_HEARTBEAT_SEC": 15,
    "GUEST_POSITION_UPDATE_SEC": 0.25,
    "GUEST_AVAILABILITY_CACHE_SEC": 5,
    "GUEST_TIMEOUT_FALLBACK": DEFAULT_TIMEOUT_FALLBACK,
    "GUEST_DEMO_TOKEN_DELAY_SEC": 0.03,
    "GUEST_SYNC_THREADS": 4,
    # The guest API's own middleware when the site serves it through GuestAPILane.
    "GUEST_API_MIDDLEWARE": [
        "guest_queue.middleware.APISecurityMiddleware",
        "guest_queue.middleware.ContentLengthMiddleware",
    ],
    "GUEST_QUEUE_BACKEND": "local",
    "GUEST_QUEUE_REDIS_URL": "",
    "GUEST_QUEUE_REDIS_PREFIX": "guest_queue",
    "GUEST_QUEUE_LEASE_SEC": 5,
    "GUEST_QUEUE_REDIS_TIMEOUT_SEC": 1,
    "GUEST_CACHE_ENABLED": True,
    "GUEST_CACHE_ALIAS": "default",
    "GUEST_CACHE_TTL_SEC": 86400,
    "GUEST_CACHE_SIMILARITY": None,
    "GUEST_RESUME_GRACE_SEC": 20,
    "GUEST_RESUME_LOG_MAX_EVENTS": 2000,
    "GUEST_RESUME_LOG_MAX_BYTES": 1048576,
    "GUEST_MAX_HISTORY_TURNS": 20,
    "GUEST_CACHE_LOCAL_SEC": 10,
    "GUEST_HASH_KEY": None,
    "GUEST_METRICS_ENABLED": False,
    "GUEST_METRICS_TOKEN": None,
}


class GuestQueueSettings:
    """Attribute access to every ``GUEST_*`` setting, falling back to its default."""

    def __getattr__(self, name: str) -> Any:
        # Only called for a name not kept yet (see the module's docstring).
        key = f"GUEST_{name}"
        if key not in DEFAULTS:
            raise AttributeError(name)
        value = getattr(settings, key, DEFAULTS[key])
        self.__dict__[name] = value
        return value

    def forget(self) -> None:
        """Read every setting afresh from now on."""
        self.__dict__.clear()

    def queue_config(self) -> QueueConfig:
        """The core's configuration built from the current settings."""
        return QueueConfig(
            max_concurrent=self.MAX_CONCURRENT_REQUESTS,
            max_queue_size=self.MAX_QUEUE_SIZE,
            max_per_client=self.MAX_REQUESTS_PER_CLIENT,
            request_timeout_sec=float(self.REQUEST_TIMEOUT_SEC),
            max_queue_wait_sec=(
                float(self.MAX_QUEUE_WAIT_SEC) if self.MAX_QUEUE_WAIT_SEC else None
            ),
            heartbeat_sec=float(self.HEARTBEAT_SEC),
            history_limit=self.HISTORY_LIMIT,
            shutdown_grace_sec=float(self.SHUTDOWN_GRACE_SEC),
            position_update_interval_sec=float(self.POSITION_UPDATE_SEC),
            availability_cache_sec=min(5.0, float(self.AVAILABILITY_CACHE_SEC)),
            timeout_fallback=self.TIMEOUT_FALLBACK,
            cache_similarity=(
                float(self.CACHE_SIMILARITY) if self.CACHE_SIMILARITY is not None else None
            ),
            resume_grace_sec=float(self.RESUME_GRACE_SEC),
            resume_log_max_events=self.RESUME_LOG_MAX_EVENTS,
            resume_log_max_bytes=self.RESUME_LOG_MAX_BYTES,
            backend=self.QUEUE_BACKEND,
            backend_options=self.backend_options(),
        )

    def backend_options(self) -> dict[str, Any]:
        """The options only the queue backend reads (today: the shared queue's Redis)."""
        return {
            "url": self.QUEUE_REDIS_URL,
            "prefix": self.QUEUE_REDIS_PREFIX,
            "lease_sec": self.QUEUE_LEASE_SEC,
            "timeout_sec": self.QUEUE_REDIS_TIMEOUT_SEC,
        }


app_settings = GuestQueueSettings()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("GUEST_"):
        app_settings.forget()


setting_changed.connect(_setting_changed, dispatch_uid="guest_queue.conf")
