"""Production defaults: the demo SECRET_KEY stops a DEBUG=false start-up; the documented
production environment passes ``check --deploy`` without a warning."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from django.core.checks import run_checks
from django.test import override_settings

from genestory.settings import DEMO_SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent

# docs/security.md, "Production settings": keep the two in step.
PRODUCTION = {
    "DEBUG": "false",
    "ALLOWED_HOSTS": "chat.example.org",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
}
PROJECT_VARS = {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "DATABASE_URL", *PRODUCTION}


def environment(**values: str) -> dict[str, str]:
    """This process's environment without any project setting, plus ``values``."""
    base = {
        k: v for k, v in os.environ.items() if k not in PROJECT_VARS and not k.startswith("GUEST_")
    }
    return {**base, "DJANGO_SETTINGS_MODULE": "genestory.settings", **values}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_demo_key_with_debug_off_is_a_check_error() -> None:
    def ids() -> set[str]:
        return {m.id for m in run_checks() if m.id and m.id.startswith("genestory.")}

    with override_settings(DEBUG=False, SECRET_KEY=DEMO_SECRET_KEY):
        assert ids() == {"genestory.E001"}
    with override_settings(DEBUG=False, SECRET_KEY="django-insecure-" + "a" * 50):
        assert ids() == {"genestory.E001"}
    with override_settings(DEBUG=True, SECRET_KEY=DEMO_SECRET_KEY):
        assert ids() == set()
    with override_settings(DEBUG=False, SECRET_KEY=secrets.token_urlsafe(50)):
        assert ids() == set()


def test_manage_py_check_fails_with_the_demo_key_in_production() -> None:
    result = manage("check", DEBUG="false")
    assert result.returncode != 0
    assert "genestory.E001" in result.stderr


def test_uvicorn_does_not_start_with_the_demo_key(tmp_path: Path) -> None:
    # uvicorn runs no system checks itself: genestory/asgi.py runs them at import.
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "genestory.asgi:application", "--port", "0"],
        cwd=ROOT,
        env=environment(DEBUG="false", DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "genestory.E001" in result.stderr
    assert "Uvicorn running" not in result.stderr


def test_the_documented_production_settings_pass_check_deploy() -> None:
    key = secrets.token_urlsafe(50)
    result = manage("check", "--deploy", "--fail-level", "WARNING", SECRET_KEY=key, **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
    # Without them, the same command fails: the test can tell the difference.
    bare = manage("check", "--deploy", "--fail-level", "WARNING", DEBUG="false", SECRET_KEY=key)
    assert bare.returncode != 0
    for check_id in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check_id in bare.stderr
