"""The project's own system checks: production must not run on demo defaults."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register


@register(Tags.security)
def check_secret_key(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """With DEBUG off, the published demo key (or any generated dev key) is an error."""
    key = getattr(settings, "SECRET_KEY", "")
    if settings.DEBUG or not key.startswith("django-insecure-"):
        return []
    return [
        Error(
            "SECRET_KEY is the demo's published key (or another 'django-insecure-' key) "
            "while DEBUG is off.",
            hint=(
                "Set SECRET_KEY in the environment to a long random value, e.g. from "
                "python -c 'import secrets; print(secrets.token_urlsafe(50))'."
            ),
            id="genestory.E001",
        )
    ]


def require_passing_checks() -> None:
    """Run the system checks as ``runserver`` does; exit on errors so the server won't start.

    ASGI servers (uvicorn, daphne, gunicorn) import the application without running them.
    The messages are printed once, without a traceback: they say what to fix.
    """
    from django.core import checks

    errors = [m for m in checks.run_checks() if m.is_serious() and not m.is_silenced()]
    if errors:
        print(
            "System check identified errors; the server does not start:\n"
            + "\n".join(str(m) for m in errors),
            file=sys.stderr,
        )
        raise SystemExit(1)
