"""The app works without its optional extras: a site that did not install ``redis``,
``prometheus_client`` or ``httpx`` can import every module it uses and pass its checks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WITHOUT_EXTRAS = textwrap.dedent(
    """
    import builtins
    real = builtins.__import__
    EXTRAS = ("redis", "prometheus_client", "httpx")

    def without_extras(name, *args, **kwargs):
        if name.split(".")[0] in EXTRAS:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    builtins.__import__ = without_extras
    from django.conf import settings
    # A site of its own (not genestory, whose settings use the OpenAI workflow's extra).
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "guest_queue"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        ROOT_URLCONF="tests.urls_minimal",
        ASGI_APPLICATION="mysite.asgi.application",
        SECRET_KEY="a test key that is long enough for the keyed hashes to accept",
    )
    import django
    django.setup()
    from django.core.management import call_command
    import guest_queue.asgi, guest_queue.http.views, guest_queue.runtime, guest_queue.urls
    call_command("check")
    print("ok")
    """
)


def test_the_app_imports_and_checks_without_its_optional_extras() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
