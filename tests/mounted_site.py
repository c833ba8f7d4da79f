"""A fresh ``django-admin startproject`` site with guest_queue mounted by the README's steps.

Shared by ``tests/e2e/test_wheel.py`` (the built wheel in a venv of its own) and
``bench/site_compare.py`` (this checkout, against genestory). The site is what a
site owner has: startproject's settings and middleware plus ``LocaleMiddleware``
(the "normal middleware stack" of issue 26: security, sessions, locale, common,
CSRF, auth, messages, clickjacking), two views of its own, and the README's
fenced blocks marked ``<!-- mount: NAME -->`` applied as they are.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import textwrap
from pathlib import Path

MOUNT_BLOCK = re.compile(
    r"^[ \t]*<!-- mount: (?P<name>[a-z-]+) -->[ \t]*\n"
    r"(?P<indent>[ \t]*)```[a-z]*\n(?P<body>.*?)\n[ \t]*```",
    re.MULTILINE | re.DOTALL,
)

#: The site's own middleware addition: a multilingual site's LocaleMiddleware after sessions.
LOCALE_MIDDLEWARE = """
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.sessions.middleware.SessionMiddleware") + 1,
    "django.middleware.locale.LocaleMiddleware",
)
"""

#: The site's own views: one that needs the site's middleware, one plain page.
SITE_VIEWS = '''\
"""The site's own pages, which must keep the site's middleware."""

from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.utils.translation import get_language


def account(request):
    """Session, user, CSRF token and language: each set by one of the site's middleware."""
    visits = request.session.get("visits", 0) + 1
    request.session["visits"] = visits
    return JsonResponse(
        {
            "visits": visits,
            "user": str(request.user),
            "authenticated": request.user.is_authenticated,
            "csrf_token": get_token(request),
            "language": get_language(),
            "method": request.method,
        }
    )


def home(request):
    return HttpResponse("<!doctype html><title>My site</title><h1>Welcome to my site</h1>")
'''

SITE_URLS = """
from mysite import views

urlpatterns += [
    path("account/", views.account, name="account"),
    path("", views.home, name="home"),
]
"""


def mount_steps(readme: str) -> dict[str, str]:
    """The README's machine-readable mount blocks, by name, dedented."""
    steps: dict[str, str] = {}
    for match in MOUNT_BLOCK.finditer(readme):
        assert match["name"] not in steps, f"two mount blocks named {match['name']!r}"
        steps[match["name"]] = textwrap.dedent(match["body"]) + "\n"
    return steps


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{shlex.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def make_site(
    django_admin: str, site: Path, steps: dict[str, str], env: dict[str, str] | None = None
) -> None:
    """``startproject mysite`` in ``site``, the site's own additions, then README steps 1 to 3."""
    site.mkdir(parents=True, exist_ok=True)
    run([django_admin, "startproject", "mysite", str(site)], site, env)
    package = site / "mysite"
    with (package / "settings.py").open("a") as settings:
        settings.write(LOCALE_MIDDLEWARE + "\n" + steps["settings"])
    (package / "views.py").write_text(SITE_VIEWS)
    with (package / "urls.py").open("a") as urls:
        urls.write("\n" + steps["urls"] + SITE_URLS)
    (package / "asgi.py").write_text(steps["asgi"])


def append_settings(site: Path, text: str) -> None:
    with (site / "mysite" / "settings.py").open("a") as settings:
        settings.write("\n" + text)
