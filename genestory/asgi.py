"""ASGI entry point: the site's Django app with guest_queue mounted in front of it.

Serve with ``uvicorn genestory.asgi:application --lifespan on``. The mount is the
README's ``<!-- mount: asgi -->`` block line for line (``tests/test_docs.py``), plus
the project's start-up checks. Behind a proxy add ``--proxy-headers
--forwarded-allow-ips=<proxy>``, without one ``--no-proxy-headers`` (uvicorn otherwise
believes ``X-Forwarded-For`` from 127.0.0.1).
"""

import os

import django
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genestory.settings")

import guest_queue.asgi
from genestory.checks import require_passing_checks

# Invalid GUEST_* values, or the demo SECRET_KEY with DEBUG off, stop the start-up here,
# before the mount builds the API's middleware. The checks need the apps loaded, which is
# the first thing get_asgi_application() does (django.setup); doing it again is a no-op.
django.setup(set_prefix=False)
require_passing_checks()

application = guest_queue.asgi.application(get_asgi_application())
