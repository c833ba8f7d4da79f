"""ASGI entry point: the site's Django app with guest_queue mounted in front of it.

Serve with ``uvicorn genestory.asgi:application --lifespan on`` plus the options of
docs/deployment.md, among them ``--proxy-headers --forwarded-allow-ips=<proxy>`` behind a
proxy or ``--no-proxy-headers`` without one (uvicorn otherwise believes
``X-Forwarded-For`` from 127.0.0.1).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genestory.settings")
django_application = get_asgi_application()

import guest_queue.asgi  # noqa: E402
from genestory.checks import require_passing_checks  # noqa: E402

# Invalid GUEST_* values, or the demo SECRET_KEY with DEBUG off, stop the start-up here.
require_passing_checks()

application = guest_queue.asgi.application(django_application)
