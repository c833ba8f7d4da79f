"""Settings of the genestory demo project, read from the environment with django-environ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def env_value(name: str, default: Any) -> Any:
    """A GUEST_* value: a number or bool when it parses as one, else the raw text.

    Unparseable values are kept as they are so that guest_queue's system checks
    report them clearly at start-up instead of the settings module crashing.
    """
    raw = env.str(name, default=None)
    if raw is None:
        return default
    text = raw.strip()
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


SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-genestory-demo-only-change-me")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
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

ROOT_URLCONF = "genestory.urls"
ASGI_APPLICATION = "genestory.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"guest_queue": {"handlers": ["console"], "level": env.str("LOG_LEVEL", "INFO")}},
}

# guest_queue: every setting can come from the environment; see the README for each default.
GUEST_MAX_CONCURRENT_REQUESTS = env_value("GUEST_MAX_CONCURRENT_REQUESTS", 3)
GUEST_MAX_QUEUE_SIZE = env_value("GUEST_MAX_QUEUE_SIZE", 50)
GUEST_REQUEST_TIMEOUT_SEC = env_value("GUEST_REQUEST_TIMEOUT_SEC", 60)
GUEST_MAX_QUEUE_WAIT_SEC = env_value("GUEST_MAX_QUEUE_WAIT_SEC", None)
GUEST_WORKFLOW = env.str("GUEST_WORKFLOW", default="guest_queue.workflows.demo.DemoWorkflow")
GUEST_HISTORY_LIMIT = env_value("GUEST_HISTORY_LIMIT", 100)
GUEST_HISTORY_ENABLED = env_value("GUEST_HISTORY_ENABLED", True)
GUEST_HISTORY_STORE_QUERY = env_value("GUEST_HISTORY_STORE_QUERY", True)
GUEST_HISTORY_BATCH_SIZE = env_value("GUEST_HISTORY_BATCH_SIZE", 50)
GUEST_HISTORY_FLUSH_SEC = env_value("GUEST_HISTORY_FLUSH_SEC", 0.5)
GUEST_HISTORY_BUFFER_SIZE = env_value("GUEST_HISTORY_BUFFER_SIZE", 10000)
GUEST_HISTORY_DATABASE = env.str("GUEST_HISTORY_DATABASE", default="default")
GUEST_MAX_QUERY_CHARS = env_value("GUEST_MAX_QUERY_CHARS", 2000)
GUEST_MAX_BODY_BYTES = env_value("GUEST_MAX_BODY_BYTES", 65536)
GUEST_SHUTDOWN_GRACE_SEC = env_value("GUEST_SHUTDOWN_GRACE_SEC", 30)
GUEST_HEARTBEAT_SEC = env_value("GUEST_HEARTBEAT_SEC", 15)
GUEST_POSITION_UPDATE_SEC = env_value("GUEST_POSITION_UPDATE_SEC", 0.25)
GUEST_AVAILABILITY_CACHE_SEC = env_value("GUEST_AVAILABILITY_CACHE_SEC", 5)
GUEST_TIMEOUT_FALLBACK = env.str(
    "GUEST_TIMEOUT_FALLBACK",
    default="Sorry, this answer is taking longer than expected. Please try again in a moment.",
)
GUEST_DEMO_TOKEN_DELAY_SEC = env_value("GUEST_DEMO_TOKEN_DELAY_SEC", 0.03)
GUEST_SYNC_THREADS = env_value("GUEST_SYNC_THREADS", 4)
# The guest API skips MIDDLEWARE above (asgi.py serves it through GuestAPILane) and
# runs only these; add e.g. "corsheaders.middleware.CorsMiddleware" here for CORS.
GUEST_API_MIDDLEWARE = env.list(
    "GUEST_API_MIDDLEWARE",
    default=[
        "guest_queue.middleware.APISecurityMiddleware",
        "guest_queue.middleware.ContentLengthMiddleware",
    ],
)
# One queue across processes and hosts: GUEST_QUEUE_BACKEND=redis and the shared Redis.
GUEST_QUEUE_BACKEND = env.str("GUEST_QUEUE_BACKEND", default="local")
GUEST_QUEUE_REDIS_URL = env.str("GUEST_QUEUE_REDIS_URL", default="")
GUEST_QUEUE_REDIS_PREFIX = env.str("GUEST_QUEUE_REDIS_PREFIX", default="guest_queue")
GUEST_QUEUE_LEASE_SEC = env_value("GUEST_QUEUE_LEASE_SEC", 5)
GUEST_QUEUE_REDIS_TIMEOUT_SEC = env_value("GUEST_QUEUE_REDIS_TIMEOUT_SEC", 1)
GUEST_CACHE_ENABLED = env_value("GUEST_CACHE_ENABLED", True)
GUEST_CACHE_ALIAS = env.str("GUEST_CACHE_ALIAS", default="default")
GUEST_CACHE_TTL_SEC = env_value("GUEST_CACHE_TTL_SEC", 86400)
GUEST_CACHE_SIMILARITY = env_value("GUEST_CACHE_SIMILARITY", None)
GUEST_CACHE_LOCAL_SEC = env_value("GUEST_CACHE_LOCAL_SEC", 10)
# For GUEST_WORKFLOW=guest_queue.workflows.openai.OpenAIChatWorkflow:
GUEST_OPENAI_BASE_URL = env.str("GUEST_OPENAI_BASE_URL", default="https://api.openai.com/v1")
GUEST_OPENAI_MODEL = env.str("GUEST_OPENAI_MODEL", default="gpt-4o-mini")
GUEST_OPENAI_API_KEY = env.str("GUEST_OPENAI_API_KEY", default="")
GUEST_OPENAI_SYSTEM_PROMPT = env.str("GUEST_OPENAI_SYSTEM_PROMPT", default="")
GUEST_OPENAI_MAX_TOKENS = env_value("GUEST_OPENAI_MAX_TOKENS", 512)
GUEST_OPENAI_TEMPERATURE = env_value("GUEST_OPENAI_TEMPERATURE", 0.3)
GUEST_OPENAI_CONNECT_TIMEOUT_SEC = env_value("GUEST_OPENAI_CONNECT_TIMEOUT_SEC", 5)
GUEST_OPENAI_READ_TIMEOUT_SEC = env_value("GUEST_OPENAI_READ_TIMEOUT_SEC", 30)
GUEST_OPENAI_SUGGESTIONS = env.str("GUEST_OPENAI_SUGGESTIONS", default="none")
# Questions separated by "|" (they may contain commas).
GUEST_OPENAI_FIXED_SUGGESTIONS = [
    q.strip() for q in env.str("GUEST_OPENAI_FIXED_SUGGESTIONS", default="").split("|") if q.strip()
]
