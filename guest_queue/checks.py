"""System checks: invalid settings fail at start-up, never mid-request."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register, run_checks
from django.utils.module_loading import import_string

from . import metrics
from .conf import app_settings
from .core.backends import backend_class
from .core.config import ConfigProblem, int_at_least, number
from .ratelimit import parse_rate

# (check id, setting name without GUEST_, test, what a valid value is)
RULES: list[tuple[str, str, Callable[[Any], bool], str]] = [
    ("E001", "MAX_CONCURRENT_REQUESTS", int_at_least(1), "an integer >= 1"),
    ("E002", "MAX_QUEUE_SIZE", int_at_least(0), "an integer >= 0"),
    ("E003", "REQUEST_TIMEOUT_SEC", number(0, strict=True), "a number of seconds > 0"),
    ("E004", "HISTORY_LIMIT", int_at_least(1), "an integer >= 1"),
    ("E005", "MAX_QUERY_CHARS", int_at_least(1), "an integer >= 1"),
    ("E006", "MAX_BODY_BYTES", int_at_least(64), "an integer >= 64"),
    ("E007", "SHUTDOWN_GRACE_SEC", number(0), "a number of seconds >= 0"),
    ("E008", "HEARTBEAT_SEC", number(0, strict=True), "a number of seconds > 0"),
    (
        "E009",
        "MAX_QUEUE_WAIT_SEC",
        lambda v: v is None or number(0, strict=True)(v),
        "None (no limit) or a number of seconds > 0",
    ),
    ("E010", "POSITION_UPDATE_SEC", number(0.01, 5), "a number of seconds from 0.01 to 5"),
    ("E011", "AVAILABILITY_CACHE_SEC", number(0, 5), "a number of seconds from 0 to 5"),
    ("E012", "DEMO_TOKEN_DELAY_SEC", number(0, 10), "a number of seconds from 0 to 10"),
    (
        "E013",
        "TIMEOUT_FALLBACK",
        lambda v: isinstance(v, str) and bool(v.strip()),
        "a non-empty string",
    ),
    ("E016", "SYNC_THREADS", int_at_least(1), "an integer >= 1"),
    ("E100", "RESUME_GRACE_SEC", number(0.1, 3600), "a number of seconds from 0.1 to 3600"),
    ("E101", "RESUME_LOG_MAX_EVENTS", int_at_least(16), "an integer >= 16"),
    ("E102", "RESUME_LOG_MAX_BYTES", int_at_least(4096), "an integer >= 4096"),
    ("E103", "MAX_HISTORY_TURNS", int_at_least(0), "an integer >= 0"),
    ("E017", "HISTORY_ENABLED", lambda v: isinstance(v, bool), "True or False"),
    ("E018", "HISTORY_STORE_QUERY", lambda v: isinstance(v, bool), "True or False"),
    ("E019", "HISTORY_BATCH_SIZE", int_at_least(1), "an integer >= 1"),
    ("E020", "HISTORY_FLUSH_SEC", number(0.01, 60), "a number of seconds from 0.01 to 60"),
    ("E021", "HISTORY_BUFFER_SIZE", int_at_least(1), "an integer >= 1"),
    ("E028", "CACHE_ENABLED", lambda v: isinstance(v, bool), "True or False"),
    ("E029", "CACHE_TTL_SEC", number(0, strict=True), "a number of seconds > 0"),
    (
        "E030",
        "CACHE_SIMILARITY",
        lambda v: v is None or number(0.1, 1)(v),
        "None (exact matches only) or a number from 0.1 to 1",
    ),
    (
        "E034",
        "QUEUE_REDIS_PREFIX",
        lambda v: isinstance(v, str) and bool(v) and not set(v) & set("{} "),
        "a non-empty string without spaces or braces",
    ),
    ("E035", "QUEUE_LEASE_SEC", number(0.3, 300), "a number of seconds from 0.3 to 300"),
    ("E036", "QUEUE_REDIS_TIMEOUT_SEC", number(0.05, 30), "a number of seconds from 0.05 to 30"),
    (
        "E061",
        "HASH_KEY",
        lambda v: v is None or (isinstance(v, str) and len(v) >= 32),
        "None (use SECRET_KEY) or a string of at least 32 characters",
    ),
    ("E050", "HISTORY_LOOKUP_TIMEOUT_SEC", number(0.1, 60), "a number of seconds from 0.1 to 60"),
    ("E051", "HISTORY_FLUSH_TIMEOUT_SEC", number(0.1, 300), "a number of seconds from 0.1 to 300"),
    ("E070", "MAX_REQUESTS_PER_CLIENT", int_at_least(0), "an integer >= 0 (0: no cap)"),
    ("E092", "CACHE_LOCAL_SEC", number(0, 300), "a number of seconds from 0 to 300"),
    (
        "E071",
        "RATE_LIMIT",
        lambda v: v is None or v == "" or parse_rate(v) is not None,
        "None (off) or a rate such as '20/10m' (requests / window in s, m or h)",
    ),
    ("E082", "METRICS_ENABLED", lambda v: isinstance(v, bool), "True or False"),
    (
        "E081",
        "METRICS_TOKEN",
        lambda v: v is None or (isinstance(v, str) and bool(v.strip()) and v == v.strip()),
        "None (no token) or a non-empty string without surrounding spaces",
    ),
]


@register(Tags.compatibility)
def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """Each GUEST_* setting has the right type and range."""
    errors: list[CheckMessage] = []
    for code, name, valid, expected in RULES:
        value = getattr(app_settings, name)
        if not valid(value):
            errors.append(
                Error(
                    f"GUEST_{name} must be {expected}, not {value!r}.",
                    hint=f"Fix GUEST_{name} in your settings or environment.",
                    id=f"guest_queue.{code}",
                )
            )
    errors.extend(_check_metrics())
    errors.extend(_check_workflow())
    errors.extend(_check_api_middleware())
    errors.extend(_check_client_key())
    errors.extend(_check_backend())
    alias = app_settings.HISTORY_DATABASE
    if alias not in settings.DATABASES:
        errors.append(
            Error(f"GUEST_HISTORY_DATABASE {alias!r} is not in DATABASES.", id="guest_queue.E022")
        )
    cache_alias = app_settings.CACHE_ALIAS
    uses_cache = app_settings.CACHE_ENABLED is True or bool(app_settings.RATE_LIMIT)
    if uses_cache and cache_alias not in settings.CACHES:
        errors.append(
            Error(f"GUEST_CACHE_ALIAS {cache_alias!r} is not in CACHES.", id="guest_queue.E031")
        )
    return errors


def _check_metrics() -> list[CheckMessage]:
    """Metrics turned on need the ``prometheus`` extra."""
    if app_settings.METRICS_ENABLED is not True or metrics.available():
        return []
    return [
        Error(
            "GUEST_METRICS_ENABLED is on but prometheus_client is not installed.",
            hint='Install "django-guest-queue[prometheus]", or turn GUEST_METRICS_ENABLED off.',
            id="guest_queue.E080",
        )
    ]


def _errors(problems: Sequence[ConfigProblem]) -> list[CheckMessage]:
    return [Error(p.message, hint=p.hint or None, id=f"guest_queue.{p.id}") for p in problems]


def _check_backend() -> list[CheckMessage]:
    """The backend is a short name or an Admission subclass; it checks its own options."""
    name = app_settings.QUEUE_BACKEND
    try:
        backend = backend_class(name) if isinstance(name, str) else None
    except (ImportError, TypeError) as exc:
        backend, reason = None, f" ({exc})"
    else:
        reason = ""
    if backend is None:
        return [
            Error(
                "GUEST_QUEUE_BACKEND must be 'local', 'redis' or the dotted path of an "
                f"Admission subclass, not {name!r}{reason}.",
                id="guest_queue.E032",
            )
        ]
    return _errors(backend.check(app_settings.backend_options()))


def _check_api_middleware() -> list[CheckMessage]:
    paths = app_settings.API_MIDDLEWARE
    if not isinstance(paths, list | tuple) or not all(isinstance(p, str) for p in paths):
        return [
            Error(
                f"GUEST_API_MIDDLEWARE must be a list of dotted paths, not {paths!r}.",
                id="guest_queue.E090",
            )
        ]
    errors: list[CheckMessage] = []
    for path in paths:
        try:
            import_string(path)
        except ImportError as exc:
            errors.append(
                Error(
                    f"GUEST_API_MIDDLEWARE entry {path!r} cannot be imported: {exc}",
                    id="guest_queue.E091",
                )
            )
    return errors


def _check_client_key() -> list[CheckMessage]:
    path = app_settings.CLIENT_KEY
    if path is None or path == "":
        return []
    try:
        function = import_string(path) if isinstance(path, str) else None
    except ImportError as exc:
        return [
            Error(f"GUEST_CLIENT_KEY {path!r} cannot be imported: {exc}", id="guest_queue.E072")
        ]
    if not callable(function):
        return [
            Error(
                f"GUEST_CLIENT_KEY must be the dotted path of a function (request) -> str, "
                f"not {path!r}.",
                id="guest_queue.E072",
            )
        ]
    return []


def _check_workflow() -> list[CheckMessage]:
    """The workflow imports, streams, and accepts GUEST_WORKFLOW_OPTIONS (which it checks)."""
    path = app_settings.WORKFLOW
    try:
        workflow_class = import_string(path)
    except ImportError as exc:
        return [Error(f"GUEST_WORKFLOW {path!r} cannot be imported: {exc}", id="guest_queue.E014")]
    if not callable(getattr(workflow_class, "stream", None)):
        return [Error(f"GUEST_WORKFLOW {path!r} has no stream() method.", id="guest_queue.E015")]
    options = app_settings.WORKFLOW_OPTIONS
    if not (isinstance(options, dict) and all(isinstance(k, str) for k in options)):
        return [
            Error(
                f"GUEST_WORKFLOW_OPTIONS must be a dict of keyword arguments, not {options!r}.",
                id="guest_queue.E040",
            )
        ]
    try:
        inspect.signature(workflow_class).bind(**options)
    except TypeError as exc:
        return [
            Error(
                f"GUEST_WORKFLOW_OPTIONS does not fit {path}: {exc}.",
                hint="Its keys are the keyword arguments of the workflow's constructor.",
                id="guest_queue.E040",
            )
        ]
    check = getattr(workflow_class, "check", None)
    return _errors(check(options)) if callable(check) else []


@register(Tags.compatibility)
def check_asgi(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """Streaming and the queue need an ASGI server."""
    if getattr(settings, "ASGI_APPLICATION", None):
        return []
    return [
        Warning(
            "guest_queue is not served over ASGI: ASGI_APPLICATION is not set.",
            hint=(
                "Streams and the shared queue need one event loop per process. Serve the site "
                "with an ASGI server (uvicorn, daphne) and set ASGI_APPLICATION."
            ),
            id="guest_queue.W001",
        )
    ]


def startup_problems() -> list[str]:
    """The app's own check errors, one ``id: message`` line each: the queue must not start."""
    return [
        f"{m.id}: {m.msg}" + (f" HINT: {m.hint}" if m.hint else "")
        for m in run_checks(tags=[Tags.compatibility])
        if m.is_serious() and (m.id or "").startswith("guest_queue.")
    ]
