"""ASGI entry point: Django for HTTP, guest_queue's handler for the lifespan protocol.

Serve with ``uvicorn genestory.asgi:application --lifespan on``.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genestory.settings")
django_application = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.DEBUG:
    # As runserver does: static files from the app directories in development.
    # In production nginx (or a CDN) serves STATIC_ROOT after collectstatic.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_application = ASGIStaticFilesHandler(django_application)

from channels.routing import ProtocolTypeRouter  # noqa: E402

from guest_queue.asgi import SharedSyncThreads  # noqa: E402
from guest_queue.lane import GuestAPILane  # noqa: E402
from guest_queue.lifespan import LifespanHandler  # noqa: E402

# The lean lane: the guest API runs GUEST_API_MIDDLEWARE instead of the whole
# MIDDLEWARE stack (see docs/performance.md); every other URL is untouched.
application = ProtocolTypeRouter(
    {
        "http": SharedSyncThreads(GuestAPILane(django_application)),
        "lifespan": LifespanHandler(),
    }
)
