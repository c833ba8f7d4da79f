"""Test settings: the demo project, with every GUEST_* setting at its documented default."""

import os
import tempfile
from pathlib import Path

import environ

from genestory.settings import *  # noqa: F403
from guest_queue.conf import DEFAULTS
from tests.services import optional_redis_url

# Start from the documented defaults, whatever the shell or a .env file says.
globals().update(DEFAULTS)
# Not a "django-insecure-" key: a shell with DEBUG=false must not stop the tests (genestory.E001).
SECRET_KEY = "tests-only-" + "k" * 50
GUEST_WORKFLOW = "tests.scripted.ScriptedWorkflow"
# Most tests repeat the same scripted questions and expect the workflow to run each
# time; the answer-cache tests turn the cache on (its documented default) themselves.
GUEST_CACHE_ENABLED = False
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "test.sqlite3",
        # A file, not memory: the history writer uses its own thread and connection,
        # and the outage tests lock the file from outside.
        "TEST": {"NAME": str(Path(tempfile.gettempdir()) / f"guest_queue_{os.getpid()}.sqlite3")},
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
            "timeout": 0.2,
        },
    }
}
# PostgreSQL, when a server is given (CI sets it): the history tests run there too.
if os.environ.get("GUEST_TEST_DATABASE_URL"):
    DATABASES["postgres"] = environ.Env.db_url_config(os.environ["GUEST_TEST_DATABASE_URL"])
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Redis, when a server is given (CI sets it): the answer-cache tests run there too, each
# pytest-xdist worker in a database of its own (tests/services.py).
if redis_url := optional_redis_url():
    CACHES["redis"] = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": redis_url,
        "KEY_PREFIX": "guest_queue_tests",
    }
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
