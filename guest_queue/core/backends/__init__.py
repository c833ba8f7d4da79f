"""Queue backends behind one interface (``base.Admission``): ``local`` and ``redis``.

A backend is named the way ``CHANNEL_LAYERS`` and Django's ``TASKS`` name theirs:
the dotted path of an ``Admission`` subclass, or one of the short names below.
"""

from __future__ import annotations

from dataclasses import fields
from importlib import import_module

from .base import Admission

SHORT_NAMES = {
    "local": "guest_queue.core.backends.local.LocalAdmission",
    "redis": "guest_queue.core.backends.redis.RedisAdmission",
}


def backend_path(name: str) -> str:
    """The dotted path ``name`` stands for (a short name's, or ``name`` itself)."""
    return SHORT_NAMES.get(name, name)


def option_names(name: str) -> frozenset[str] | None:
    """The options a built-in backend reads; ``None`` for any other (it checks its own)."""
    path = backend_path(name)
    if path == SHORT_NAMES["local"]:
        return frozenset()
    if path == SHORT_NAMES["redis"]:
        from .redis.link import RedisOptions  # needs redis-py: only for the Redis backend

        return frozenset(f.name for f in fields(RedisOptions))
    return None


def backend_class(name: str) -> type[Admission]:
    """The ``Admission`` subclass ``name`` stands for.

    Raises ``ImportError`` when it cannot be imported, ``TypeError`` when it is
    not an ``Admission`` subclass.
    """
    path = backend_path(name)
    module_path, _, attribute = path.rpartition(".")
    if not module_path:
        raise ImportError("not a dotted path")
    try:
        found = getattr(import_module(module_path), attribute)
    except AttributeError as exc:
        raise ImportError(f"{module_path!r} has no {attribute!r}") from exc
    if not (isinstance(found, type) and issubclass(found, Admission)):
        raise TypeError(f"{path!r} is not an Admission subclass")
    return found
