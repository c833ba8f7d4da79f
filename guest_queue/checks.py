"""System checks: invalid settings fail at start-up, never mid-request."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register, run_checks
from django.utils.module_loading import import_string

from .conf import AUTO, OLD_BACKEND_SETTINGS, REMOVED_SETTINGS, Backend, app_settings, raw
from .core.backends import backend_class, backend_path, option_names
from .core.config import ConfigProblem, int_at_least, number
from .core.ordering import DEFAULT_TIER, FAIRNESS_MODES
from .guests.clients import prefix_limits
from .guests.ratelimit import parse_rate
from .observe import metrics

Rule = tuple[str, str, Callable[[Any], bool], str]


def _flag(v: Any) -> bool:
    return isinstance(v, bool)


# (check id, setting name without GUEST_, test, what a valid value is), in id order.
# Ids are public (sites silence them): never renumber, never reuse a retired one.
RULES: list[Rule] = [
    (
        "E001",
        "MAX_CONCURRENT_REQUESTS",
        lambda v: v == AUTO or int_at_least(1)(v),
        'an integer >= 1, or "auto"',
    ),
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
    ("E011", "AVAILABILITY_CACHE_SEC", number(0, 5), "a number of seconds from 0 to 5"),
    ("E012", "DEMO_TOKEN_DELAY_SEC", number(0, 10), "a number of seconds from 0 to 10"),
    (
        "E013",
        "TIMEOUT_FALLBACK",
        lambda v: isinstance(v, str) and bool(v.strip()),
        "a non-empty string",
    ),
    ("E016", "SYNC_THREADS", int_at_least(1), "an integer >= 1"),
    ("E017", "HISTORY_ENABLED", _flag, "True or False"),
    ("E018", "HISTORY_STORE_QUERY", _flag, "True or False"),
    ("E020", "HISTORY_FLUSH_SEC", number(0.01, 60), "a number of seconds from 0.01 to 60"),
    ("E028", "CACHE_ENABLED", _flag, "True or False"),
    ("E029", "CACHE_TTL_SEC", number(0, strict=True), "a number of seconds > 0"),
    (
        "E030",
        "CACHE_SIMILARITY",
        lambda v: v is None or number(0.1, 1)(v),
        "None (exact matches only) or a number from 0.1 to 1",
    ),
    ("E051", "HISTORY_FLUSH_TIMEOUT_SEC", number(0.1, 300), "a number of seconds from 0.1 to 300"),
    (
        "E061",
        "HASH_KEY",
        lambda v: v is None or (isinstance(v, str) and len(v) >= 32),
        "None (use SECRET_KEY) or a string of at least 32 characters",
    ),
    ("E070", "MAX_REQUESTS_PER_CLIENT", int_at_least(0), "an integer >= 0 (0: no cap)"),
    (
        "E071",
        "RATE_LIMIT",
        lambda v: v is None or v == "" or parse_rate(v) is not None,
        "None (off) or a rate such as '20/10m' (requests / window in s, m or h)",
    ),
    (
        "E073",
        "IPV6_PREFIX_LIMITS",
        lambda v: prefix_limits(v) is not None,
        "a dict of IPv6 prefix length (1-63) → multiple (an integer >= 1), "
        "such as {56: 4, 48: 16}; {} for none",
    ),
    (
        "E075",
        "TIERS",
        lambda v: _tiers_valid(v),
        f"a dict of tier name (a non-empty string) → weight (a number from 0 to 1e6) naming "
        f"{DEFAULT_TIER!r}, such as {{'member': 4, {DEFAULT_TIER!r}: 1}}",
    ),
    ("E076", "FAIRNESS", lambda v: v in FAIRNESS_MODES, "'fifo' or 'fair'"),
    (
        "E081",
        "METRICS_TOKEN",
        lambda v: v is None or (isinstance(v, str) and bool(v.strip()) and v == v.strip()),
        "None (no token) or a non-empty string without surrounding spaces",
    ),
    ("E082", "METRICS_ENABLED", _flag, "True or False"),
    ("E100", "RESUME_GRACE_SEC", number(0.1, 3600), "a number of seconds from 0.1 to 3600"),
    ("E102", "RESUME_LOG_MAX_BYTES", int_at_least(4096), "an integer >= 4096"),
    ("E103", "MAX_HISTORY_TURNS", int_at_least(0), "an integer >= 0"),
    ("E120", "CONCURRENCY_FLOOR", int_at_least(1), "an integer >= 1"),
    ("E121", "CONCURRENCY_CEILING", int_at_least(1), "an integer >= 1"),
]

# The Redis backend's OPTIONS, as RULES (the option's name in place of the setting's).
REDIS_OPTION_RULES: list[Rule] = [
    (
        "E034",
        "prefix",
        lambda v: isinstance(v, str) and bool(v) and not set(v) & set("{} "),
        "a non-empty string without spaces or braces",
    ),
    ("E035", "lease_sec", number(0.3, 300), "a number of seconds from 0.3 to 300"),
    ("E036", "timeout_sec", number(0.05, 30), "a number of seconds from 0.05 to 30"),
]

#: Ids of settings that are gone; never given to another check.
RETIRED_IDS = {
    "E010": "GUEST_POSITION_UPDATE_SEC",
    "E019": "GUEST_HISTORY_BATCH_SIZE",
    "E021": "GUEST_HISTORY_BUFFER_SIZE",
    "E050": "GUEST_HISTORY_LOOKUP_TIMEOUT_SEC",
    "E092": "GUEST_CACHE_LOCAL_SEC",
    "E101": "GUEST_RESUME_LOG_MAX_EVENTS",
}


@register(Tags.compatibility)
def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """Each GUEST_* setting has the right type and range (RULES, then the rest by id)."""
    errors = _apply(RULES, raw, "GUEST_{}")
    errors.extend(_check_workflow())
    errors.extend(_check_databases_and_caches())
    errors.extend(_check_backend())
    errors.extend(_check_function("CLIENT_KEY", "str", "guest_queue.E072"))
    errors.extend(_check_function("PRIORITY", "tier name", "guest_queue.E074"))
    errors.extend(_check_metrics())
    errors.extend(_check_api_middleware())
    errors.extend(_check_removed())
    errors.extend(_check_concurrency_bounds())
    return errors


def _check_concurrency_bounds() -> list[CheckMessage]:
    """With an adaptive limit, its floor cannot be above its ceiling (``E122``)."""
    floor, ceiling = raw("CONCURRENCY_FLOOR"), raw("CONCURRENCY_CEILING")
    if raw("MAX_CONCURRENT_REQUESTS") != AUTO:
        return []
    if not (int_at_least(1)(floor) and int_at_least(1)(ceiling)) or floor <= ceiling:
        return []
    return [
        Error(
            f"GUEST_CONCURRENCY_FLOOR ({floor}) is above GUEST_CONCURRENCY_CEILING ({ceiling}).",
            hint="The limit in use stays between the two with an adaptive limit.",
            id="guest_queue.E122",
        )
    ]


def _apply(rules: Sequence[Rule], read: Callable[[str], Any], label: str) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for code, name, valid, expected in rules:
        value = read(name)
        if not valid(value):
            shown = label.format(name)
            errors.append(
                Error(
                    f"{shown} must be {expected}, not {value!r}.",
                    hint=f"Fix {shown} in your settings or environment.",
                    id=f"guest_queue.{code}",
                )
            )
    return errors


def _check_databases_and_caches() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
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


BACKEND_FORM = '{"BACKEND": "<dotted path>", "OPTIONS": {...}}'


def _check_backend() -> list[CheckMessage]:
    """GUEST_QUEUE_BACKEND has Django's form and names an Admission subclass.

    The backend then checks its own options; the old form (a name, and the Redis
    options in settings of their own) still works, with a warning.
    """
    value = raw("QUEUE_BACKEND")
    messages = _check_old_backend_form(value)
    if isinstance(value, dict):
        unknown = sorted(map(str, set(value) - {"BACKEND", "OPTIONS"}))
        options = value.get("OPTIONS", {})
        if unknown or not isinstance(options, dict) or not isinstance(value.get("BACKEND"), str):
            return [*messages, _shape_error(value, unknown)]
    elif not isinstance(value, str):
        return [*messages, _shape_error(value, [])]
    backend = app_settings.QUEUE_BACKEND
    try:
        backend_type = backend_class(backend.path)
    except (ImportError, TypeError) as exc:
        return [
            *messages,
            Error(
                "GUEST_QUEUE_BACKEND's BACKEND must be 'local', 'redis' or the dotted path of an "
                f"Admission subclass, not {backend.path!r} ({exc}).",
                id="guest_queue.E032",
            ),
        ]
    known = option_names(backend.path)
    unknown = sorted(set(backend.options) - known) if known is not None else []
    if unknown:
        messages.append(
            Error(
                f"GUEST_QUEUE_BACKEND's OPTIONS has keys {backend.path} does not read: "
                f"{', '.join(unknown)}.",
                hint=f"It reads: {', '.join(sorted(known or ())) or 'none'}.",
                id="guest_queue.E038",
            )
        )
    if backend.path == backend_path("redis"):
        # An option left out takes RedisOptions' default, which is valid.
        given = [rule for rule in REDIS_OPTION_RULES if rule[1] in backend.options]
        wrong = _apply(given, backend.options.__getitem__, "GUEST_QUEUE_BACKEND's OPTIONS[{!r}]")
        if wrong:  # The backend's own check takes the types and ranges as given.
            return messages + wrong
    return messages + _errors(backend_type.check(backend.options))


def _shape_error(value: object, unknown: list[str]) -> CheckMessage:
    extra = f" (unknown keys: {', '.join(unknown)})" if unknown else ""
    return Error(
        f"GUEST_QUEUE_BACKEND must be {BACKEND_FORM}, not {value!r}{extra}.",
        hint="BACKEND is 'local', 'redis' or a dotted path; OPTIONS a dict (may be left out).",
        id="guest_queue.E038",
    )


def _check_old_backend_form(value: object) -> list[CheckMessage]:
    """The pre-0.1 form still works for one release; say what to write instead."""
    old = [name for name in OLD_BACKEND_SETTINGS if hasattr(settings, name)]
    if isinstance(value, dict):
        if not old:
            return []
        message = f"{', '.join(old)} no longer read: GUEST_QUEUE_BACKEND is a dict."
        hint = "Move them into GUEST_QUEUE_BACKEND's OPTIONS, then remove them."
    elif isinstance(value, str):
        read = Backend.read(value)
        name = value if value in ("local", "redis") else read.path
        new = (
            {"BACKEND": name, "OPTIONS": dict(read.options)} if read.options else {"BACKEND": name}
        )
        set_names = ", ".join(["GUEST_QUEUE_BACKEND", *old])
        message = f"{set_names}: this form of the backend setting goes in the next release."
        remove = f" and remove {', '.join(old)}" if old else ""
        hint = f"Write GUEST_QUEUE_BACKEND = {new!r}{remove}."
    else:
        return []
    return [Warning(message, hint=hint, id="guest_queue.W020")]


def _check_removed() -> list[CheckMessage]:
    """Settings no longer read, still set: one release of notice."""
    return [
        Warning(
            f"{name} is no longer read: {instead}.",
            hint=f"Remove {name} from your settings.",
            id="guest_queue.W010",
        )
        for name, instead in REMOVED_SETTINGS.items()
        if hasattr(settings, name)
    ]


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


def _check_function(name: str, returns: str, check_id: str) -> list[CheckMessage]:
    """``GUEST_<name>``, when set, imports and is a function ``(request) -> <returns>``."""
    path = getattr(app_settings, name)
    if path is None or path == "":
        return []
    setting = f"GUEST_{name}"
    try:
        function = import_string(path) if isinstance(path, str) else None
    except ImportError as exc:
        return [Error(f"{setting} {path!r} cannot be imported: {exc}", id=check_id)]
    if not callable(function):
        return [
            Error(
                f"{setting} must be the dotted path of a function (request) -> {returns}, "
                f"not {path!r}.",
                id=check_id,
            )
        ]
    return []


def _tiers_valid(value: Any) -> bool:
    """``GUEST_TIERS``: tier name → weight (>= 0, a real number), ``guest`` among them."""
    return (
        isinstance(value, dict)
        and DEFAULT_TIER in value
        and all(isinstance(name, str) and name.strip() == name != "" for name in value)
        and all(number(0, 1e6)(weight) for weight in value.values())
    )


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
