"""The module names sites used before the app was grouped into folders still import, for
one release, with a warning that names the new home (CHANGELOG, docs/architecture.md)."""

from __future__ import annotations

import importlib
import sys

import pytest

OLD_NAMES = {
    "guest_queue.lifespan": ("guest_queue.asgi.lifespan", ["LifespanHandler", "with_lifespan"]),
    "guest_queue.client_guard": ("guest_queue.asgi.client_guard", ["ClientCapGuard"]),
    "guest_queue.lane": ("guest_queue.asgi.lane", ["GuestAPILane"]),
    "guest_queue.pages": ("guest_queue.http.pages", ["ChatPage"]),
    "guest_queue.middleware": (
        "guest_queue.http.middleware",
        ["APISecurityMiddleware", "ContentLengthMiddleware"],
    ),
    "guest_queue.clients": (
        "guest_queue.guests.clients",
        ["address_key", "client_id", "key_of_address", "id_of_key"],
    ),
    "guest_queue.metrics": ("guest_queue.observe.metrics", ["count_rejected"]),
    "guest_queue.views": ("guest_queue.http.views", ["chat", "chat_simple", "queue_status"]),
}


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_an_old_module_name_still_imports_with_a_warning(old: str) -> None:
    new, names = OLD_NAMES[old]
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    moved = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(moved, name)


def test_the_old_middleware_paths_in_a_sites_settings_still_load() -> None:
    from django.utils.module_loading import import_string

    from guest_queue.http.middleware import APISecurityMiddleware

    sys.modules.pop("guest_queue.middleware", None)
    with pytest.warns(DeprecationWarning):
        loaded = import_string("guest_queue.middleware.APISecurityMiddleware")
    assert loaded is APISecurityMiddleware
