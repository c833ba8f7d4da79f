"""The app's settings: one typed object, its defaults in one place, read lazily.

``GuestSettings`` declares every ``GUEST_*`` setting with its type and default;
the queue's defaults are the core's own (``QueueConfig``, which knows no Django),
so each default is written once. ``DEFAULTS`` (``GUEST_NAME -> default``) is
derived from it for the demo project, the tests and the docs.

``app_settings`` is read lazily, on first use, so ``override_settings`` works:
the values it holds are dropped when a ``GUEST_*`` setting changes (Django's
``setting_changed``, which ``override_settings`` sends) and read afresh on the
next access. A request reads a dozen of them; a setting the site leaves out
costs Django a raised and caught ``AttributeError`` each time it is looked up.

Values are the site's as they are: the system checks (``checks.py``) refuse
wrong types and ranges at start-up, before the queue uses any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.signals import setting_changed

from .core.backends import backend_path
from .core.config import QueueConfig

_QUEUE = {f.name: f.default for f in fields(QueueConfig)}


def _queue(name: str) -> Any:
    """The core's default for ``QueueConfig.<name>``: the queue's defaults live there."""
    return _QUEUE[name]


#: ``GUEST_MAX_CONCURRENT_REQUESTS``' value for a limit adapted to the upstream.
AUTO = "auto"

#: The pre-0.1 settings the backend's OPTIONS replace, and the option each one was.
OLD_BACKEND_SETTINGS = {
    "GUEST_QUEUE_REDIS_URL": "url",
    "GUEST_QUEUE_REDIS_PREFIX": "prefix",
    "GUEST_QUEUE_LEASE_SEC": "lease_sec",
    "GUEST_QUEUE_REDIS_TIMEOUT_SEC": "timeout_sec",
}

#: Settings no longer read, and what took their place (``guest_queue.W010`` while set).
REMOVED_SETTINGS = {
    "GUEST_HISTORY_BATCH_SIZE": "the history is written 50 rows at a time",
    "GUEST_HISTORY_BUFFER_SIZE": "at most 10000 unwritten history rows are kept",
    "GUEST_HISTORY_LOOKUP_TIMEOUT_SEC": "a history lookup waits at most 2 s",
    "GUEST_POSITION_UPDATE_SEC": "position updates are coalesced over 0.25 s",
    "GUEST_CACHE_LOCAL_SEC": "answers read from a cache over the network are kept "
    "in process memory for 10 s",
    "GUEST_RESUME_LOG_MAX_EVENTS": "GUEST_RESUME_LOG_MAX_BYTES alone bounds a resumable log",
}


@dataclass(frozen=True, slots=True)
class Backend:
    """``GUEST_QUEUE_BACKEND`` read: the ``Admission`` subclass's path and its options."""

    path: str = backend_path(_queue("backend"))
    options: Mapping[str, Any] = field(default_factory=dict)

    def as_setting(self) -> dict[str, Any]:
        """This backend in the setting's own form."""
        return {"BACKEND": self.path, "OPTIONS": dict(self.options)}

    @classmethod
    def read(cls, value: object) -> Backend:
        """The backend a ``GUEST_QUEUE_BACKEND`` value names, taking the old names too.

        A value that is not a valid setting gives what can be made of it; the
        system checks (``guest_queue.E032``, ``E038``) report what is wrong.
        """
        if isinstance(value, Mapping):
            name, options = value.get("BACKEND", ""), value.get("OPTIONS", {})
            if not isinstance(options, Mapping):
                options = {}
        else:
            # The old form (one release): a name, the Redis options in settings of their own.
            name = value
            options = {
                option: getattr(settings, old)
                for old, option in OLD_BACKEND_SETTINGS.items()
                if hasattr(settings, old)
            }
        return cls(backend_path(name) if isinstance(name, str) else repr(name), dict(options))


@dataclass(frozen=True, slots=True)
class GuestSettings:
    """Every ``GUEST_*`` setting (without its prefix), as the site set it or its default."""

    # What a site sets (docs/settings.md opens with these).
    WORKFLOW: str = "guest_queue.workflows.demo.DemoWorkflow"
    #: Keyword arguments for the workflow's constructor (each workflow documents its own).
    WORKFLOW_OPTIONS: Mapping[str, Any] = field(default_factory=dict)
    #: A number (the fixed limit) or "auto" (adapted between the floor and the ceiling).
    MAX_CONCURRENT_REQUESTS: int | str = _queue("max_concurrent")
    MAX_QUEUE_SIZE: int = _queue("max_queue_size")
    REQUEST_TIMEOUT_SEC: float = _queue("request_timeout_sec")
    QUEUE_BACKEND: Backend = field(default_factory=Backend)
    MAX_REQUESTS_PER_CLIENT: int = _queue("max_per_client")
    CLIENT_KEY: str | None = None
    RATE_LIMIT: str | None = None
    # The order of the line (docs/admission.md).
    PRIORITY: str | None = None
    TIERS: Mapping[str, float] = field(default_factory=lambda: dict(QueueConfig().tiers))
    FAIRNESS: str = _queue("fairness")
    CACHE_ALIAS: str = "default"
    SHUTDOWN_GRACE_SEC: float = _queue("shutdown_grace_sec")
    # The queue and its streams.
    #: The bounds of the limit in use with GUEST_MAX_CONCURRENT_REQUESTS = "auto".
    CONCURRENCY_FLOOR: int = _queue("concurrency_floor")
    CONCURRENCY_CEILING: int = 16
    MAX_QUEUE_WAIT_SEC: float | None = _queue("max_queue_wait_sec")
    HEARTBEAT_SEC: float = _queue("heartbeat_sec")
    AVAILABILITY_CACHE_SEC: float = _queue("availability_cache_sec")
    TIMEOUT_FALLBACK: str = _queue("timeout_fallback")
    RESUME_GRACE_SEC: float = _queue("resume_grace_sec")
    RESUME_LOG_MAX_BYTES: int = _queue("resume_log_max_bytes")
    # What a guest may send.
    MAX_QUERY_CHARS: int = 2000
    MAX_BODY_BYTES: int = 65536
    MAX_HISTORY_TURNS: int = 20
    # The answer cache.
    CACHE_ENABLED: bool = True
    CACHE_TTL_SEC: float = 86400
    CACHE_SIMILARITY: float | None = _queue("cache_similarity")
    # The request history.
    HISTORY_ENABLED: bool = True
    HISTORY_LIMIT: int = _queue("history_limit")
    HISTORY_STORE_QUERY: bool = True
    HISTORY_DATABASE: str = "default"
    HISTORY_FLUSH_SEC: float = 0.5
    HISTORY_FLUSH_TIMEOUT_SEC: float = 10
    # Serving.
    SYNC_THREADS: int = 4
    #: The guest API's own middleware when the site serves it through GuestAPILane.
    API_MIDDLEWARE: list[str] = field(
        default_factory=lambda: [
            "guest_queue.http.middleware.APISecurityMiddleware",
            "guest_queue.http.middleware.ContentLengthMiddleware",
        ]
    )
    #: IPv6 prefix length -> how many times the per-client cap and rate one such network
    #: may hold, whichever of its /64s ask ({}: each /64 on its own).
    IPV6_PREFIX_LIMITS: Mapping[Any, int] = field(default_factory=lambda: {56: 4, 48: 16})
    HASH_KEY: str | None = None
    METRICS_ENABLED: bool = False
    METRICS_TOKEN: str | None = None
    # The built-in demo workflow.
    DEMO_TOKEN_DELAY_SEC: float = 0.03

    def queue_config(self) -> QueueConfig:
        """The core's configuration built from these settings."""
        adaptive = self.MAX_CONCURRENT_REQUESTS == AUTO
        return QueueConfig(
            max_concurrent=int(
                self.CONCURRENCY_CEILING if adaptive else self.MAX_CONCURRENT_REQUESTS
            ),
            adaptive=adaptive,
            concurrency_floor=self.CONCURRENCY_FLOOR,
            max_queue_size=self.MAX_QUEUE_SIZE,
            max_per_client=self.MAX_REQUESTS_PER_CLIENT,
            request_timeout_sec=float(self.REQUEST_TIMEOUT_SEC),
            max_queue_wait_sec=(
                float(self.MAX_QUEUE_WAIT_SEC) if self.MAX_QUEUE_WAIT_SEC else None
            ),
            heartbeat_sec=float(self.HEARTBEAT_SEC),
            history_limit=self.HISTORY_LIMIT,
            shutdown_grace_sec=float(self.SHUTDOWN_GRACE_SEC),
            availability_cache_sec=min(5.0, float(self.AVAILABILITY_CACHE_SEC)),
            timeout_fallback=self.TIMEOUT_FALLBACK,
            cache_similarity=(
                float(self.CACHE_SIMILARITY) if self.CACHE_SIMILARITY is not None else None
            ),
            resume_grace_sec=float(self.RESUME_GRACE_SEC),
            resume_log_max_bytes=self.RESUME_LOG_MAX_BYTES,
            backend=self.QUEUE_BACKEND.path,
            backend_options=self.QUEUE_BACKEND.options,
            tiers={str(name): float(weight) for name, weight in self.TIERS.items()},
            fairness=self.FAIRNESS,
        )


def _default(f: Any) -> Any:
    value = f.default_factory() if f.default is MISSING else f.default
    return value.as_setting() if isinstance(value, Backend) else value


#: ``GUEST_<NAME>`` -> its default, in the settings' own form.
DEFAULTS: dict[str, Any] = {f"GUEST_{f.name}": _default(f) for f in fields(GuestSettings)}


def raw(name: str) -> Any:
    """``GUEST_<name>`` exactly as the site set it, else its default (for the checks)."""
    key = f"GUEST_{name}"
    return getattr(settings, key, DEFAULTS[key])


def read_settings() -> GuestSettings:
    """The settings as they are now."""
    values = {f.name: raw(f.name) for f in fields(GuestSettings)}
    values["QUEUE_BACKEND"] = Backend.read(values["QUEUE_BACKEND"])
    return GuestSettings(**values)


class LazySettings(GuestSettings):
    """``GuestSettings`` read on first use and again after a ``GUEST_*`` setting changes.

    Its values are the slots of ``GuestSettings``: an unset one (nothing read yet)
    makes Python call ``__getattr__``, which reads them all.
    """

    __slots__ = ()

    def __init__(self) -> None:
        """Nothing is read until a value is."""

    if not TYPE_CHECKING:  # Type checkers see GuestSettings' typed fields, nothing else.

        def __getattr__(self, name: str) -> object:
            if name not in _NAMES:
                raise AttributeError(name)
            self._load()
            return object.__getattribute__(self, name)

    def _load(self) -> None:
        current = read_settings()
        for name in _NAMES:
            object.__setattr__(self, name, getattr(current, name))

    def forget(self) -> None:
        """Read every setting afresh from now on."""
        for name in _NAMES:
            with suppress(AttributeError):
                object.__delattr__(self, name)


_NAMES = tuple(f.name for f in fields(GuestSettings))

app_settings = LazySettings()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("GUEST_"):
        app_settings.forget()


setting_changed.connect(_setting_changed, dispatch_uid="guest_queue.conf")
