"""Invalid settings are reported by system checks at start-up, with namespaced ids."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import override_settings

ROOT = Path(__file__).resolve().parent.parent


def check_ids(**overrides: Any) -> set[str]:
    with override_settings(**overrides):
        return {m.id for m in run_checks() if m.id and m.id.startswith("guest_queue.")}


def test_defaults_pass() -> None:
    assert check_ids() == set()


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("GUEST_MAX_CONCURRENT_REQUESTS", 0, "guest_queue.E001"),
        ("GUEST_MAX_CONCURRENT_REQUESTS", "three", "guest_queue.E001"),
        ("GUEST_MAX_CONCURRENT_REQUESTS", True, "guest_queue.E001"),
        ("GUEST_MAX_QUEUE_SIZE", -1, "guest_queue.E002"),
        ("GUEST_REQUEST_TIMEOUT_SEC", 0, "guest_queue.E003"),
        ("GUEST_HISTORY_LIMIT", 0, "guest_queue.E004"),
        ("GUEST_MAX_QUERY_CHARS", 2.5, "guest_queue.E005"),
        ("GUEST_MAX_BODY_BYTES", 10, "guest_queue.E006"),
        ("GUEST_SHUTDOWN_GRACE_SEC", -5, "guest_queue.E007"),
        ("GUEST_HEARTBEAT_SEC", 0, "guest_queue.E008"),
        ("GUEST_MAX_QUEUE_WAIT_SEC", -1, "guest_queue.E009"),
        ("GUEST_POSITION_UPDATE_SEC", 60, "guest_queue.E010"),
        ("GUEST_AVAILABILITY_CACHE_SEC", 30, "guest_queue.E011"),
        ("GUEST_DEMO_TOKEN_DELAY_SEC", -1, "guest_queue.E012"),
        ("GUEST_TIMEOUT_FALLBACK", "", "guest_queue.E013"),
        ("GUEST_SYNC_THREADS", 0, "guest_queue.E016"),
        ("GUEST_CACHE_LOCAL_SEC", -1, "guest_queue.E062"),
        ("GUEST_QUEUE_BACKEND", "memcached", "guest_queue.E032"),
        ("GUEST_QUEUE_BACKEND", "redis", "guest_queue.E033"),
        ("GUEST_QUEUE_REDIS_PREFIX", "a {b}", "guest_queue.E034"),
        ("GUEST_QUEUE_LEASE_SEC", 0, "guest_queue.E035"),
        ("GUEST_QUEUE_REDIS_TIMEOUT_SEC", "soon", "guest_queue.E036"),
        (
            "GUEST_API_MIDDLEWARE",
            "guest_queue.middleware.APISecurityMiddleware",
            "guest_queue.E060",
        ),
        ("GUEST_API_MIDDLEWARE", ["no.such.Middleware"], "guest_queue.E061"),
        ("GUEST_WORKFLOW", "no.such.Workflow", "guest_queue.E014"),
        ("GUEST_WORKFLOW", "guest_queue.conf.GuestQueueSettings", "guest_queue.E015"),
    ],
)
def test_invalid_setting_is_a_check_error(setting: str, value: Any, check_id: str) -> None:
    assert check_ids(**{setting: value}) == {check_id}


def test_a_redis_queue_with_a_redis_url_passes() -> None:
    ids = check_ids(GUEST_QUEUE_BACKEND="redis", GUEST_QUEUE_REDIS_URL="redis://cache:6379/2")
    assert ids == set()


def test_a_redis_timeout_too_long_for_the_lease_is_an_error() -> None:
    ids = check_ids(
        GUEST_QUEUE_BACKEND="redis",
        GUEST_QUEUE_REDIS_URL="redis://cache:6379/2",
        GUEST_QUEUE_LEASE_SEC=3,
        GUEST_QUEUE_REDIS_TIMEOUT_SEC=1,
    )
    assert ids == {"guest_queue.E037"}


def test_missing_asgi_application_is_a_warning() -> None:
    assert check_ids(ASGI_APPLICATION=None) == {"guest_queue.W001"}


def test_bad_environment_value_fails_the_start_up_check_not_the_import() -> None:
    env = {
        **os.environ,
        "GUEST_MAX_CONCURRENT_REQUESTS": "lots",
        "DJANGO_SETTINGS_MODULE": "genestory.settings",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "guest_queue.E001" in result.stderr
    assert "GUEST_MAX_CONCURRENT_REQUESTS must be an integer >= 1, not 'lots'" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_setting_can_come_from_the_environment() -> None:
    from guest_queue.conf import DEFAULTS

    project_settings = (ROOT / "genestory" / "settings.py").read_text()
    missing = [name for name in DEFAULTS if f'"{name}"' not in project_settings]
    assert missing == []
