"""Who a client is: the key the per-client cap and rate limit count by.

By default the client's address as the ASGI server reports it (``REMOTE_ADDR``),
with an IPv6 address grouped by its /64 prefix (one subscriber's devices share
one, and a host can pick any address in it) and an IPv4-mapped IPv6 address
read as the IPv4 one. Behind a proxy, that is the proxy's address unless the
server trusts its forwarding headers (``uvicorn --proxy-headers
--forwarded-allow-ips=...``): see docs/fair-share.md. ``GUEST_CLIENT_KEY``
names a function of the request to use instead (a session, a login). Only a
keyed hash of the key ever leaves this module: addresses are never stored.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from functools import cache

from django.http import HttpRequest
from django.utils.module_loading import import_string

from ..conf import app_settings
from .hashing import CLIENT, keyed_hash

logger = logging.getLogger("guest_queue")

ClientKey = Callable[[HttpRequest], str]
#: Length of the client id handed to the queue and stored in the history.
ID_CHARS = 32


def address_key(request: HttpRequest) -> str:
    """The client's address; IPv6 as its /64 network, IPv4-mapped IPv6 as IPv4."""
    return key_of_address(str(request.META.get("REMOTE_ADDR") or ""))


def key_of_address(address: str) -> str:
    """``address_key`` for an address string (as an ASGI scope's ``client`` holds it)."""
    if _plain_ipv4(address):
        return address  # What ``ipaddress`` would give back, for a fraction of its cost.
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # A unix socket, a test client: whatever the server says.
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _plain_ipv4(address: str) -> bool:
    """Whether ``address`` is an IPv4 address written as ``ipaddress`` writes it."""
    try:
        return socket.inet_ntoa(socket.inet_aton(address)) == address
    except (OSError, ValueError):
        return False


@cache
def _load(path: str) -> ClientKey:
    function: ClientKey = import_string(path)
    return function


def client_key(request: HttpRequest) -> str:
    """The key naming the request's client (``GUEST_CLIENT_KEY``, else its address).

    A custom function that fails or returns nothing falls back to the address,
    so a bug there never turns into a 500 for guests.
    """
    path = app_settings.CLIENT_KEY
    if path:
        try:
            key = _load(path)(request)
        except Exception:
            logger.exception("GUEST_CLIENT_KEY %s failed; keying by address", path)
        else:
            if key:
                return str(key)
    return address_key(request)


def client_id(request: HttpRequest) -> str:
    """The opaque id of the request's client: a keyed hash of its key, never the address."""
    return id_of_key(client_key(request))


def id_of_key(key: str) -> str:
    """The opaque id for a client key."""
    return keyed_hash(CLIENT, key)[:ID_CHARS]
