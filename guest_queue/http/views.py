"""HTTP glue: parse and validate, hand over to the queue, encode what comes back."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from ..core import events as ev
from ..core.backends.base import Ticket
from ..core.consume import collect
from ..core.errors import NotAccepting, Refused
from ..core.manager import QueueManager
from ..guests.clients import client_of
from ..guests.ratelimit import over_rate
from ..guests.tiers import tier_of
from ..history.lookup import HistoryUnavailable, find_in_history
from ..observe import metrics
from ..runtime import Misconfigured, get_history, get_manager
from ..runtime.unstarted import note_ticket
from .chat_input import history_of, language_of
from .metrics import metrics_view
from .responses import EventStreamResponse, json_error
from .resumable import resumable_flag, resumable_response
from .schema import openapi_json
from .validation import BadRequest, parse_object, query_from

AsyncView = Callable[..., Coroutine[Any, Any, HttpResponseBase]]

logger = logging.getLogger("guest_queue")

# chat/simple: which status code each way of ending maps to.
SIMPLE_ERROR_STATUS = {
    ev.CODE_WORKFLOW_ERROR: 502,
    ev.CODE_INTERNAL: 502,
    ev.CODE_WORKFLOW_OUTPUT: 502,
    ev.CODE_UNAVAILABLE: 503,
    ev.CODE_SHUTTING_DOWN: 503,
}


def allow(*methods: str) -> Callable[[AsyncView], AsyncView]:
    """Answer other methods with a JSON 405 and an ``Allow`` header; exempt from CSRF.

    The API is anonymous and cookie-free (the seed's frontend sends no token),
    so there is no session for a cross-site request to ride on.
    """

    def decorator(view: AsyncView) -> AsyncView:
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                response = json_error(
                    405, "method_not_allowed", f"Use {' or '.join(methods)} for this endpoint."
                )
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return await view(request, *args, **kwargs)
            except BadRequest as exc:
                return json_error(exc.status, exc.code, exc.message)
            except Refused as exc:
                metrics.count_rejected(exc.code)
                return json_error(
                    exc.status_code, exc.code, exc.message, retry_after=exc.retry_after
                )
            except Misconfigured as exc:
                # No lifespan (daphne, runserver): the first requests are where checks fail.
                logger.error("%s", exc)
                return json_error(
                    503,
                    "misconfigured",
                    "The assistant is not configured correctly; the server log says why.",
                    retry_after=60,
                )

        return csrf_exempt(wrapper)

    return decorator


async def submit(
    request: HttpRequest, data: dict[str, Any] | None = None
) -> tuple[QueueManager, Ticket]:
    """Validate the question and hand it to the queue (``Refused`` if it is not accepted)."""
    if data is None:
        data = parse_object(request)
    query, language, history = query_from(data), language_of(data, request), history_of(data)
    # A keyed hash of who asks: the cap and rate count by it, staff group by it; no IP kept.
    client = client_of(request)
    manager = get_manager()
    if not manager.accepting:
        # Refused before the rate counts the question: a proxy that retries a 503 on another
        # worker (as the nginx example in deploy/nginx does) has it counted once.
        raise manager.refuse(NotAccepting("The server is restarting; please try again.", 5))
    limited = await over_rate(manager, client)
    if limited is not None:
        raise manager.refuse(limited)
    ticket = await manager.submit(
        query,
        client_hint=client.id,
        client_groups=client.groups,
        language=language,
        history=history,
        tier=tier_of(request),
    )
    note_ticket(manager, ticket)
    return manager, ticket


@allow("POST")
async def chat(request: HttpRequest) -> HttpResponseBase:
    """Ask a question; the answer streams back as Server-Sent Events."""
    data = parse_object(request)
    resumable = resumable_flag(data)
    manager, ticket = await submit(request, data)
    if resumable:
        return resumable_response(manager, ticket)
    return EventStreamResponse(manager, ticket)


@allow("POST")
async def chat_simple(request: HttpRequest) -> HttpResponseBase:
    """Ask a question and get the whole answer in one JSON response."""
    manager, ticket = await submit(request)
    try:
        result = await collect(manager, ticket)
    finally:
        manager.release(ticket)
    record = ticket.record
    common = {
        "request_id": record.request_id,
        "cached": record.cached,
        "wait_ms": record.wait_ms,
        "processing_ms": record.processing_ms,
    }
    payload = result.payload
    if result.terminal is not None and result.terminal.name == ev.WORKFLOW_COMPLETE:
        return JsonResponse(
            {
                **common,
                "status": "completed",
                "answer": result.answer,
                "suggested_questions": payload.get("suggested_questions", []),
            }
        )
    if result.terminal is not None and result.terminal.name == ev.TIMEOUT:
        return json_error(
            504, "timeout", payload["error"], status="timeout", answer=payload["fallback"], **common
        )
    code = payload.get("code", ev.CODE_INTERNAL)
    status = SIMPLE_ERROR_STATUS.get(code, 502)
    # Every 503 says when to come back: the server restarting, the workflow marked down.
    retry = {"retry_after": 5} if status == 503 else {}
    return json_error(
        status,
        code,
        payload.get("error", "The request failed."),
        status=record.status.value,
        **retry,
        **common,
    )


async def _status(manager: QueueManager) -> dict[str, Any]:
    history = get_history()
    status = await manager.shared_status()
    return {
        **status,
        "history_dropped": history.dropped if history else 0,
        "history_rejected": history.rejected if history else 0,
    }


@allow("GET")
async def queue_status(request: HttpRequest) -> HttpResponseBase:
    """Live queue figures: the whole queue's, when several processes share it."""
    return JsonResponse(await _status(get_manager()))


@allow("GET")
async def request_status(request: HttpRequest, request_id: str) -> HttpResponseBase:
    """What happened to one request."""
    try:
        canonical = str(uuid.UUID(request_id))
    except ValueError:
        return json_error(404, "not_found", "No such request: malformed id.")
    data = await get_manager().find(canonical)
    history = get_history()
    if data is None and history is not None:
        try:
            data = await find_in_history(history.database, canonical)
        except HistoryUnavailable:
            return json_error(
                503, "history_unavailable", "Request history is unavailable.", retry_after=5
            )
    if data is None:
        return json_error(404, "not_found", "No such request (it may have expired).")
    return JsonResponse(data)


@allow("GET")
async def health(request: HttpRequest) -> HttpResponseBase:
    """Whether this process accepts questions and the workflow is up."""
    manager = get_manager()
    available = await manager.is_available()
    reachable = await manager.admission.reachable()
    healthy = available and reachable and manager.accepting
    response = JsonResponse(
        {
            "status": "ok" if healthy else "unavailable",
            "queue": await _status(manager),
            "workflow": "available" if available else "unavailable",
            "queue_backend": {"name": manager.admission.name, "reachable": reachable},
            "warnings": manager.warnings,
        },
        status=200 if healthy else 503,
    )
    if not healthy:
        response["Retry-After"] = "5"
    return response


@allow("GET")
async def metrics_endpoint(request: HttpRequest) -> HttpResponseBase:
    """Prometheus metrics, when GUEST_METRICS_ENABLED (see ``guest_queue.observe.metrics``)."""
    return await metrics_view(request, get_manager())


@allow("GET")
async def health_live(request: HttpRequest) -> HttpResponseBase:
    """Liveness: this process and its event loop answer, whatever the workflow's state.

    Touches neither the workflow nor the queue backend: a model or Redis outage
    must make the readiness probe (``health``) fail, never get the process restarted.
    """
    return JsonResponse({"status": "ok"})


@allow("GET")
async def openapi(request: HttpRequest) -> HttpResponseBase:
    """The OpenAPI 3.1 document of this API."""
    prefix = reverse("guest_queue:openapi")[: -len("openapi.json")]
    return HttpResponse(openapi_json(prefix), content_type="application/json")


@csrf_exempt
async def not_found(request: HttpRequest, path: str = "") -> HttpResponseBase:
    """Unknown paths under the API answer in JSON too, whatever the method."""
    return json_error(404, "not_found", "No such endpoint.")
