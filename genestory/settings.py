"""Settings of the genestory demo project, read from the environment with django-environ."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import environ

from genestory.assistant import KNOWLEDGE
from genestory.assistant.prompts import SYSTEM_PROMPT
from guest_queue.conf import DEFAULTS
from guest_queue.workflows.openai import OpenAISettings

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def env_value(name: str, default: Any) -> Any:
    """A GUEST_* value read as its default's type: text, a bool, a number, JSON for a dict.

    Unparseable values are kept as they are so that guest_queue's system checks
    report them clearly at start-up instead of the settings module crashing.
    """
    raw = env.str(name, default=None)
    if raw is None:
        return default
    text = raw.strip()
    if isinstance(default, str):
        return raw
    if isinstance(default, dict | list):
        try:
            return json.loads(text)
        except ValueError:
            return text
    if isinstance(default, bool):
        lowered = text.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        return text
    if text.lower() in {"", "none", "null", "off"} and default is None:
        return None
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


#: Settings that are text when set and None (off) when not.
TEXT_SETTINGS = (
    "GUEST_HASH_KEY",
    "GUEST_METRICS_TOKEN",
    "GUEST_CLIENT_KEY",
    "GUEST_RATE_LIMIT",
    "GUEST_PRIORITY",
)


#: The environment variables of the queue backend's OPTIONS (GUEST_QUEUE_BACKEND a name).
BACKEND_OPTIONS = {
    "GUEST_QUEUE_REDIS_URL": "url",
    "GUEST_QUEUE_REDIS_PREFIX": "prefix",
    "GUEST_QUEUE_LEASE_SEC": "lease_sec",
    "GUEST_QUEUE_REDIS_TIMEOUT_SEC": "timeout_sec",
}


def queue_backend(value: Any) -> Any:
    """GUEST_QUEUE_BACKEND in Django's form: JSON as it is, or a name and its options' variables.

    ``GUEST_QUEUE_BACKEND=redis GUEST_QUEUE_REDIS_URL=redis://...`` becomes
    ``{"BACKEND": "redis", "OPTIONS": {"url": "redis://..."}}``.
    """
    if not isinstance(value, str):
        return value
    options = {
        option: env_value(name, "") if option in ("url", "prefix") else env_value(name, 0.0)
        for name, option in BACKEND_OPTIONS.items()
        if name in os.environ
    }
    return {"BACKEND": value.strip(), "OPTIONS": options}


def guest_queue_settings() -> dict[str, Any]:
    """Every guest_queue setting, from the environment or else its default."""
    settings = {name: env_value(name, default) for name, default in DEFAULTS.items()}
    # Text whose default is None (off): a key or token made of digits is still text.
    for name in TEXT_SETTINGS:
        settings[name] = env.str(name, default="") or None
    settings["GUEST_QUEUE_BACKEND"] = queue_backend(settings["GUEST_QUEUE_BACKEND"])
    return settings


DEMO_WORKFLOW = "guest_queue.workflows.demo.DemoWorkflow"
OPENAI_WORKFLOW = "guest_queue.workflows.openai.OpenAIChatWorkflow"
#: The OpenAI workflow's GUEST_OPENAI_* variables and the option each one sets.
OPENAI_OPTIONS = {
    "GUEST_OPENAI_BASE_URL": "base_url",
    "GUEST_OPENAI_MODEL": "model",
    "GUEST_OPENAI_API_KEY": "api_key",
    "GUEST_OPENAI_SYSTEM_PROMPT": "system_prompt",
    "GUEST_OPENAI_MAX_TOKENS": "max_tokens",
    "GUEST_OPENAI_TEMPERATURE": "temperature",
    "GUEST_OPENAI_CONNECT_TIMEOUT_SEC": "connect_timeout_sec",
    "GUEST_OPENAI_READ_TIMEOUT_SEC": "read_timeout_sec",
    "GUEST_OPENAI_SUGGESTIONS": "suggestions",
    "GUEST_OPENAI_FIXED_SUGGESTIONS": "fixed_suggestions",
}


def genestory_assistant(workflow: str, options: Any) -> Any:
    """GeneStory's knowledge (demo workflow) or prompt (OpenAI workflow), unless set already.

    guest_queue's own defaults are neutral; this project's assistant answers about GeneStory.
    Options that are not a dict are left for guest_queue's check (E040) to report.
    """
    if not isinstance(options, dict):
        return options
    if workflow == DEMO_WORKFLOW:
        return {"knowledge": KNOWLEDGE, **options}
    if workflow == OPENAI_WORKFLOW and not options.get("system_prompt"):
        return {**options, "system_prompt": SYSTEM_PROMPT}
    return options


def openai_options() -> dict[str, Any]:
    """GUEST_WORKFLOW_OPTIONS for the OpenAI workflow from the GUEST_OPENAI_* set."""
    defaults = OpenAISettings()
    options: dict[str, Any] = {}
    for name, option in OPENAI_OPTIONS.items():
        if name not in os.environ:
            continue
        if option == "fixed_suggestions":
            # Questions separated by "|" (they may contain commas).
            options[option] = [q.strip() for q in os.environ[name].split("|") if q.strip()]
        else:
            default = getattr(defaults, option)
            options[option] = env_value(name, default)
    return options


# The demo's key: with DEBUG=false it is a system-check error (genestory.E001), so a
# production server never starts with it. Set SECRET_KEY in the environment.
DEMO_SECRET_KEY = "django-insecure-genestory-demo-only-change-me"
SECRET_KEY = env.str("SECRET_KEY", default=DEMO_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS in production (docs/security.md lists the values `check --deploy` wants). Off by
# default so that `make run` works over plain http on 127.0.0.1.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
# Behind a TLS-terminating proxy that sets it, e.g. "HTTP_X_FORWARDED_PROTO,https".
SECURE_PROXY_SSL_HEADER = env.tuple("SECURE_PROXY_SSL_HEADER", default=None)
# Paths (regexes, no leading slash) left on http by SECURE_SSL_REDIRECT: a load balancer's probes.
SECURE_REDIRECT_EXEMPT = env.list("SECURE_REDIRECT_EXEMPT", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "genestory",
    "servestatic",
    "guest_queue",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if not DEBUG:
    # Serves collectstatic's files from memory-indexed STATIC_ROOT (async: no thread hop);
    # other paths pass straight on. With DEBUG, genestory.asgi serves the app directories.
    MIDDLEWARE.insert(1, "servestatic.middleware.ServeStaticMiddleware")

ROOT_URLCONF = "genestory.urls"
ASGI_APPLICATION = "genestory.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # genestory/templates/genestory/chat.html: the app's page with GeneStory's texts.
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent read-then-write transactions need IMMEDIATE; WAL lets readers run beside a writer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("vi", "Vietnamese")]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
# collectstatic writes content-hashed, gzip-compressed copies (brotli too if installed); ServeStatic
# serves those with a one-year immutable Cache-Control (the page links the hashed names).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "genestory.storage.StaticStorage"},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"guest_queue": {"handlers": ["console"], "level": env.str("LOG_LEVEL", "INFO")}},
}
# LOG_FORMAT=json: one JSON object per line, the request log's fields as keys
# (needs python-json-logger, which the demo does not install: docs/metrics.md).
if env.str("LOG_FORMAT", "text") == "json":
    LOGGING["formatters"] = {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    }
    LOGGING["handlers"]["console"]["formatter"] = "json"

# guest_queue: every setting of guest_queue.conf.DEFAULTS can come from the environment,
# read as the type of its default; the defaults themselves live only there.
_guest_queue = guest_queue_settings()
# The OpenAI workflow's options keep their own variables (GUEST_OPENAI_*), unless
# GUEST_WORKFLOW_OPTIONS gives them all as JSON.
if _guest_queue["GUEST_WORKFLOW"] == OPENAI_WORKFLOW and "GUEST_WORKFLOW_OPTIONS" not in os.environ:
    _guest_queue["GUEST_WORKFLOW_OPTIONS"] = openai_options()
_guest_queue["GUEST_WORKFLOW_OPTIONS"] = genestory_assistant(
    _guest_queue["GUEST_WORKFLOW"], _guest_queue["GUEST_WORKFLOW_OPTIONS"]
)
globals().update(_guest_queue)
