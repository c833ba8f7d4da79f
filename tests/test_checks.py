"""Invalid settings are reported by system checks at start-up, with namespaced ids."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import CheckMessage, run_checks
from django.test import override_settings

from guest_queue.checks import RETIRED_IDS, RULES
from guest_queue.conf import REMOVED_SETTINGS, app_settings

ROOT = Path(__file__).resolve().parent.parent


def check_ids(**overrides: Any) -> set[str]:
    with override_settings(**overrides):
        return {m.id for m in run_checks() if m.id and m.id.startswith("guest_queue.")}


def messages(check_id: str) -> list[CheckMessage]:
    return [m for m in run_checks() if m.id == check_id]


def redis_with(**options: Any) -> dict[str, Any]:
    """The Redis backend's setting with a valid URL and ``options``."""
    return {"BACKEND": "redis", "OPTIONS": {"url": "redis://cache:6379/2", **options}}


def test_defaults_pass() -> None:
    assert check_ids() == set()


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("GUEST_MAX_CONCURRENT_REQUESTS", 0, "guest_queue.E001"),
        ("GUEST_RESUME_GRACE_SEC", 0, "guest_queue.E100"),
        ("GUEST_RESUME_LOG_MAX_BYTES", "1M", "guest_queue.E102"),
        ("GUEST_MAX_HISTORY_TURNS", -1, "guest_queue.E103"),
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
        ("GUEST_AVAILABILITY_CACHE_SEC", 30, "guest_queue.E011"),
        ("GUEST_DEMO_TOKEN_DELAY_SEC", -1, "guest_queue.E012"),
        ("GUEST_TIMEOUT_FALLBACK", "", "guest_queue.E013"),
        ("GUEST_SYNC_THREADS", 0, "guest_queue.E016"),
        ("GUEST_HISTORY_ENABLED", "yes", "guest_queue.E017"),
        ("GUEST_HISTORY_STORE_QUERY", 1, "guest_queue.E018"),
        ("GUEST_HISTORY_FLUSH_SEC", 0, "guest_queue.E020"),
        ("GUEST_HISTORY_DATABASE", "nowhere", "guest_queue.E022"),
        ("GUEST_CACHE_ENABLED", "yes", "guest_queue.E028"),
        ("GUEST_CACHE_TTL_SEC", 0, "guest_queue.E029"),
        ("GUEST_CACHE_SIMILARITY", 0.05, "guest_queue.E030"),
        ("GUEST_QUEUE_BACKEND", {"BACKEND": "memcached"}, "guest_queue.E032"),
        ("GUEST_QUEUE_BACKEND", {"BACKEND": "redis"}, "guest_queue.E033"),
        ("GUEST_QUEUE_BACKEND", redis_with(prefix="a {b}"), "guest_queue.E034"),
        ("GUEST_QUEUE_BACKEND", redis_with(lease_sec=0), "guest_queue.E035"),
        ("GUEST_QUEUE_BACKEND", redis_with(timeout_sec="soon"), "guest_queue.E036"),
        ("GUEST_QUEUE_BACKEND", redis_with(lease=5), "guest_queue.E038"),
        ("GUEST_QUEUE_BACKEND", {"BACKEND": "local", "OPTIONS": {"url": "x"}}, "guest_queue.E038"),
        ("GUEST_QUEUE_BACKEND", {"BACKEND": "local", "OPTIONS": ["url"]}, "guest_queue.E038"),
        ("GUEST_QUEUE_BACKEND", {"BACKEND": "local", "LOCATION": "x"}, "guest_queue.E038"),
        ("GUEST_QUEUE_BACKEND", {"OPTIONS": {}}, "guest_queue.E038"),
        ("GUEST_QUEUE_BACKEND", ["redis"], "guest_queue.E038"),
        (
            "GUEST_API_MIDDLEWARE",
            "guest_queue.http.middleware.APISecurityMiddleware",
            "guest_queue.E090",
        ),
        ("GUEST_API_MIDDLEWARE", ["no.such.Middleware"], "guest_queue.E091"),
        ("GUEST_WORKFLOW", "no.such.Workflow", "guest_queue.E014"),
        ("GUEST_HASH_KEY", "short", "guest_queue.E061"),
        ("GUEST_HASH_KEY", 12345678901234567890123456789012345, "guest_queue.E061"),
        ("GUEST_WORKFLOW", "guest_queue.conf.GuestSettings", "guest_queue.E015"),
        ("GUEST_WORKFLOW_OPTIONS", {"speed": 2}, "guest_queue.E040"),
        ("GUEST_WORKFLOW_OPTIONS", ["token_delay"], "guest_queue.E040"),
        (
            "GUEST_QUEUE_BACKEND",
            {"BACKEND": "guest_queue.core.records.Status"},
            "guest_queue.E032",
        ),
        ("GUEST_METRICS_ENABLED", "yes", "guest_queue.E082"),
        ("GUEST_METRICS_TOKEN", 12345, "guest_queue.E081"),
        ("GUEST_METRICS_TOKEN", "", "guest_queue.E081"),
    ],
)
def test_invalid_setting_is_a_check_error(setting: str, value: Any, check_id: str) -> None:
    assert check_ids(**{setting: value}) == {check_id}


@pytest.mark.parametrize(
    ("options", "check_id"),
    [
        ({"suggestions": "always"}, "guest_queue.E023"),
        ({"max_tokens": 0}, "guest_queue.E024"),
        ({"temperature": 3}, "guest_queue.E025"),
        ({"connect_timeout_sec": 0}, "guest_queue.E026"),
        ({"read_timeout_sec": "slow"}, "guest_queue.E027"),
    ],
)
def test_the_openai_workflow_checks_its_options(options: dict[str, Any], check_id: str) -> None:
    openai = "guest_queue.workflows.openai.OpenAIChatWorkflow"
    assert check_ids(GUEST_WORKFLOW=openai, GUEST_WORKFLOW_OPTIONS=options) == {check_id}


def test_a_backend_by_dotted_path_passes() -> None:
    local = "guest_queue.core.backends.local.LocalAdmission"
    assert check_ids(GUEST_QUEUE_BACKEND={"BACKEND": local}) == set()
    assert check_ids(GUEST_QUEUE_BACKEND={"BACKEND": local, "OPTIONS": {}}) == set()


def test_an_enabled_cache_needs_its_alias_in_caches() -> None:
    assert check_ids(GUEST_CACHE_ENABLED=True, GUEST_CACHE_ALIAS="nowhere") == {"guest_queue.E031"}
    assert check_ids(GUEST_CACHE_ENABLED=False, GUEST_CACHE_ALIAS="nowhere") == set()


def test_a_redis_queue_with_a_redis_url_passes() -> None:
    assert check_ids(GUEST_QUEUE_BACKEND=redis_with()) == set()
    redis = "guest_queue.core.backends.redis.RedisAdmission"
    backend = {"BACKEND": redis, "OPTIONS": {"url": "redis://cache:6379/2"}}
    assert check_ids(GUEST_QUEUE_BACKEND=backend) == set()


def test_a_redis_timeout_too_long_for_the_lease_is_an_error() -> None:
    ids = check_ids(GUEST_QUEUE_BACKEND=redis_with(lease_sec=3, timeout_sec=1))
    assert ids == {"guest_queue.E037"}


def test_the_old_backend_settings_still_configure_the_queue_with_a_warning() -> None:
    old = {
        "GUEST_QUEUE_BACKEND": "redis",
        "GUEST_QUEUE_REDIS_URL": "redis://cache:6379/2",
        "GUEST_QUEUE_REDIS_PREFIX": "site",
        "GUEST_QUEUE_LEASE_SEC": 3,
    }
    with override_settings(**old):
        (warning,) = messages("guest_queue.W020")
        config = app_settings.queue_config()
    assert config.backend == "guest_queue.core.backends.redis.RedisAdmission"
    assert config.backend_options == {
        "url": "redis://cache:6379/2",
        "prefix": "site",
        "lease_sec": 3,
    }
    new = "{'BACKEND': 'redis', 'OPTIONS': {'url': 'redis://cache:6379/2', 'prefix': 'site', "
    assert warning.hint is not None and warning.hint.startswith(
        f"Write GUEST_QUEUE_BACKEND = {new}"
    )
    # The old names' own checks still apply, under the option's name.
    ids = check_ids(
        GUEST_QUEUE_BACKEND="redis", GUEST_QUEUE_REDIS_URL="redis://c", GUEST_QUEUE_LEASE_SEC=0
    )
    assert ids == {"guest_queue.W020", "guest_queue.E035"}
    assert check_ids(GUEST_QUEUE_BACKEND="local") == {"guest_queue.W020"}


def test_the_old_backend_names_beside_the_new_form_are_ignored_with_a_warning() -> None:
    with override_settings(GUEST_QUEUE_BACKEND=redis_with(), GUEST_QUEUE_REDIS_PREFIX="old"):
        (warning,) = messages("guest_queue.W020")
        assert app_settings.queue_config().backend_options == redis_with()["OPTIONS"]
    assert "GUEST_QUEUE_REDIS_PREFIX no longer read" in warning.msg


@pytest.mark.parametrize("name", sorted(REMOVED_SETTINGS))
def test_a_removed_setting_still_set_is_a_warning(name: str) -> None:
    with override_settings(**{name: 1}):
        (warning,) = messages("guest_queue.W010")
    assert warning.msg.startswith(f"{name} is no longer read")


def test_check_ids_are_in_order_and_retired_ones_are_never_reused() -> None:
    ids = [rule[0] for rule in RULES]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    source = (ROOT / "guest_queue" / "checks.py").read_text()
    for retired in RETIRED_IDS:
        assert source.count(f'"{retired}"') == 1, f"{retired} is retired but still used"


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
    assert (
        "GUEST_MAX_CONCURRENT_REQUESTS must be an integer >= 1, or \"auto\", not 'lots'"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def sample(default: Any) -> tuple[str, Any]:
    """An environment value unlike ``default``, and what the setting should become."""
    if isinstance(default, bool):
        return str(not default).lower(), not default
    if isinstance(default, int | float):
        return str(default + 1), default + 1
    if default is None:
        return "7", 7
    if isinstance(default, dict):
        return '{"a": 1}', {"a": 1}
    if isinstance(default, list):
        return '["a.B", "c.D"]', ["a.B", "c.D"]
    return "from the environment", "from the environment"


def test_every_setting_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from genestory.settings import TEXT_SETTINGS, guest_queue_settings
    from guest_queue.conf import DEFAULTS

    expected = {}
    for name, default in DEFAULTS.items():
        text, expected[name] = sample(default)
        if name in TEXT_SETTINGS:
            expected[name] = text  # digits stay text: a key, a token, a dotted path
        monkeypatch.setenv(name, text)
    assert guest_queue_settings() == expected


def test_the_demo_builds_the_backend_setting_from_its_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from genestory.settings import guest_queue_settings

    for name in ("GUEST_QUEUE_REDIS_PREFIX", "GUEST_QUEUE_REDIS_TIMEOUT_SEC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GUEST_QUEUE_BACKEND", "redis")
    monkeypatch.setenv("GUEST_QUEUE_REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("GUEST_QUEUE_LEASE_SEC", "1.5")
    assert guest_queue_settings()["GUEST_QUEUE_BACKEND"] == {
        "BACKEND": "redis",
        "OPTIONS": {"url": "redis://cache:6379/2", "lease_sec": 1.5},
    }
    monkeypatch.setenv("GUEST_QUEUE_BACKEND", '{"BACKEND": "local"}')
    assert guest_queue_settings()["GUEST_QUEUE_BACKEND"] == {"BACKEND": "local"}


def test_the_openai_variables_become_the_workflow_options() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GUEST_")},
        "DJANGO_SETTINGS_MODULE": "genestory.settings",
        "GUEST_WORKFLOW": "guest_queue.workflows.openai.OpenAIChatWorkflow",
        "GUEST_OPENAI_MODEL": "m",
        "GUEST_OPENAI_MAX_TOKENS": "0",
        "GUEST_OPENAI_FIXED_SUGGESTIONS": "One, two?|Three?",
    }
    code = (
        "from django.conf import settings; options = settings.GUEST_WORKFLOW_OPTIONS; "
        "print({k: v for k, v in options.items() if k != 'system_prompt'})"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == (
        "{'model': 'm', 'max_tokens': 0, 'fixed_suggestions': ['One, two?', 'Three?']}"
    )
    check = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert "guest_queue.E024" in check.stderr
