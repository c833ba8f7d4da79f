"""genestory's ASGI app without the lean lane, for benchmarking the alternative.

uvicorn bench.site_apps:lane_off --lifespan on
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genestory.settings")
_django = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from guest_queue.asgi import SharedSyncThreads  # noqa: E402
from guest_queue.asgi.lifespan import LifespanHandler  # noqa: E402

lane_off = ProtocolTypeRouter({"http": SharedSyncThreads(_django), "lifespan": LifespanHandler()})
