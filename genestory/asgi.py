"""ASGI entry point: Django for HTTP, guest_queue's handler for the lifespan protocol.

Serve with ``uvicorn genestory.asgi:application --lifespan on`` plus the options of
docs/deployment.md, among them ``--proxy-headers --forwarded-allow-ips=<proxy>`` behind a
proxy or ``--no-proxy-headers`` without one (uvicorn otherwise believes
``X-Forwarded-For`` from 127.0.0.1).
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genestory.settings")
django_application = get_asgi_application()

from genestory.checks import require_passing_checks  # noqa: E402

# Invalid GUEST_* values, or the demo SECRET_KEY with DEBUG off, stop the start-up here.
require_passing_checks()

from django.conf import settings  # noqa: E402

if settings.DEBUG:
    # As runserver does: static files from the app directories in development.
    # In production ServeStatic (a middleware, see settings) serves collectstatic's STATIC_ROOT.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_application = ASGIStaticFilesHandler(django_application)

from channels.routing import ProtocolTypeRouter  # noqa: E402

from guest_queue.asgi import SharedSyncThreads  # noqa: E402
from guest_queue.client_guard import ClientCapGuard  # noqa: E402
from guest_queue.lane import GuestAPILane  # noqa: E402
from guest_queue.lifespan import LifespanHandler  # noqa: E402

# Everything loaded so far (Django, the apps, the URL and template machinery) lives as
# long as the process: out of the collector's sight, its full passes stay short (see
# docs/performance.md, "The queue's own per-request work").
gc.collect()
gc.freeze()

application = ProtocolTypeRouter(
    {
        # A client at its cap is refused before Django runs (docs/fair-share.md); the
        # guest API runs GUEST_API_MIDDLEWARE, not the site's whole MIDDLEWARE, and
        # every other URL is untouched (the lean lane, docs/performance.md).
        "http": ClientCapGuard(SharedSyncThreads(GuestAPILane(django_application))),
        "lifespan": LifespanHandler(),
    }
)
