"""Django's ``ASGIHandler.handle``, copied per Django version, with cheap request signals.

The copies differ from Django's code only where it sends ``request_started`` and
``request_finished`` (and closes the response, which sends the latter): they
go through the lane handler's ``send_signal``/``close_response``, which skip the thread
hop when ``request_signals.inline_safe`` says that changes nothing; the 5.2 copy also
empties its list of tasks at the end, so the request leaves no reference cycle. A copy is
used only while Django's own ``handle`` is exactly the code it was copied from
(a hash of its source); any other Django version runs Django's own ``handle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix

if TYPE_CHECKING:
    from .lane import GuestAPIHandler

Handle = Callable[["GuestAPIHandler", Any, Any, Any], Awaitable[None]]


async def handle_django_5_2(handler: GuestAPIHandler, scope: Any, receive: Any, send: Any) -> None:
    """Django 5.2's ``ASGIHandler.handle``."""
    try:
        body_file = await handler.read_body(receive)
    except RequestAborted:
        return
    set_script_prefix(get_script_prefix(scope))
    await handler.send_signal(signals.request_started, scope=scope)
    request, error_response = handler.create_request(scope, body_file)
    if request is None:
        assert error_response is not None
        body_file.close()
        await handler.send_response(error_response, send)
        await handler.close_response(error_response)
        return

    async def process_request() -> HttpResponseBase:
        response = await handler.run_get_response(request)
        with contextlib.suppress(asyncio.CancelledError):  # the client went away
            await handler.send_response(response, send)
        return response

    tasks = [
        asyncio.create_task(handler.listen_for_disconnect(receive)),
        asyncio.create_task(process_request()),
    ]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        if task.done():
            try:
                task.result()
            except RequestAborted:
                pass
            except AssertionError:
                body_file.close()
                raise
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    try:
        response: HttpResponseBase = tasks[1].result()  # type: ignore[assignment]
    except asyncio.CancelledError:
        await handler.send_signal(signals.request_finished)
    else:
        await handler.close_response(response)
    body_file.close()
    # Not in Django: the disconnect listener ended with an exception whose traceback holds
    # this frame, which holds the tasks: a cycle only the garbage collector would free,
    # with the request and response in it.
    tasks.clear()


class _RequestProcessed(Exception):
    pass


async def handle_django_6(handler: GuestAPIHandler, scope: Any, receive: Any, send: Any) -> None:
    """Django 6.x's ``ASGIHandler.handle`` (a task group watches for the disconnect)."""
    try:
        body_file = await handler.read_body(receive)
    except RequestAborted:
        return
    with contextlib.closing(body_file):
        set_script_prefix(get_script_prefix(scope))
        await handler.send_signal(signals.request_started, scope=scope)
        request, error_response = handler.create_request(scope, body_file)
        if request is None:
            assert error_response is not None
            body_file.close()
            await handler.send_response(error_response, send)
            await handler.close_response(error_response)
            return
        response = None
        try:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(handler.listen_for_disconnect(receive))
                    response = await handler.run_get_response(request)
                    await handler.send_response(response, send)
                    raise _RequestProcessed
            except* (_RequestProcessed, RequestAborted):
                pass
        except BaseExceptionGroup as exception_group:
            if len(exception_group.exceptions) == 1:
                raise exception_group.exceptions[0] from None
            raise
        if response is None:
            await handler.send_signal(signals.request_finished)
        else:
            await handler.close_response(response)


# sha256 of inspect.getsource(ASGIHandler.handle) -> the copy of that code.
COPIES: dict[str, Handle] = {
    "98faeb5bef800331e6a8002fbc96b30e4122a23438ae45a047190a531ea11323": handle_django_5_2,  # 5.2.19
    "c91f27c7fcdc3fff4f1c7082e91cb30f0bfaa5781ca632a116b1d9e607fd752a": handle_django_6,  # 6.1.3
}


def matching_copy() -> Handle | None:
    """The copy of this Django's ``ASGIHandler.handle``, or None (then Django's own runs)."""
    try:
        source = inspect.getsource(ASGIHandler.handle)
    except (OSError, TypeError):
        return None
    return COPIES.get(hashlib.sha256(source.encode()).hexdigest())
