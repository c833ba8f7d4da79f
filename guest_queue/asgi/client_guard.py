"""Around Django, for the per-client cap: refuse a client already at its cap (or
whose wider IPv6 network is at its own) before Django runs.

The per-client cap holds without this guard: the view refuses the request with
the same ``429 client_limit``. But a flooding client re-sends each refusal at
once, and a refusal that goes through Django's middleware costs a few
milliseconds of CPU (and a turn on the shared sync threads) that every other
guest's request waits behind. This ASGI wrapper answers such a request from
the scope alone — no body read, no middleware — when the answer is certain:
the default client key (the address), and a queue that keeps its counts in
this process (``GUEST_QUEUE_BACKEND=local``). Anything else goes on to Django.

Requests Django accepted but dropped unstreamed are released by
``SharedSyncThreads`` (``guest_queue.asgi``), which this guard wraps.
"""

from __future__ import annotations

import asyncio
import json

from django.urls import reverse

from ..conf import app_settings
from ..core.fairness import NETWORK_LIMIT
from ..guests.clients import client_of_address
from ..observe import metrics
from ..runtime import get_manager
from .lifespan import ASGIApp, Receive, Scope, Send

#: How long a client at its cap waits for its refusal. A flood of instant refusals costs
#: the server CPU that every other guest's request waits behind; answered this much
#: later, a flooder's refusals are bounded by its connections in flight / this delay
#: (200 in flight: 400/s instead of thousands). The waiting costs a sleeping coroutine.
REFUSAL_DELAY_SEC = 0.5


class ClientCapGuard:
    """Wrap the HTTP app so questions from a client at its cap are refused up front."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._paths: frozenset[str] | None = None

    def _question_paths(self) -> frozenset[str]:
        if self._paths is None:
            self._paths = frozenset(
                (reverse("guest_queue:chat"), reverse("guest_queue:chat-simple"))
            )
        return self._paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope["path"] not in self._question_paths()
        ):
            await self.app(scope, receive, send)
            return
        if await self._refused(scope, send):
            return
        await self.app(scope, receive, send)

    async def _refused(self, scope: Scope, send: Send) -> bool:
        cap = app_settings.MAX_REQUESTS_PER_CLIENT
        client = scope.get("client")
        if app_settings.CLIENT_KEY or not cap or not client:
            return False
        manager = get_manager()
        asking = client_of_address(str(client[0]))
        if manager.admission.client_refusal(asking.id, asking.groups) is None:
            return False
        await asyncio.sleep(REFUSAL_DELAY_SEC)
        # One of its requests may have ended meanwhile: then it goes on to Django.
        code = manager.admission.client_refusal(asking.id, asking.groups)
        if code is None:
            return False
        refusal = manager.refuse(manager.client_limited(network=code == NETWORK_LIMIT))
        metrics.count_rejected(refusal.code)  # as the view counts its own refusals
        body = json.dumps(
            {"error": refusal.message, "code": refusal.code, "retry_after": refusal.retry_after}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": refusal.status_code,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(refusal.retry_after).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return True
