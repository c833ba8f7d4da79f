"""Who a client is: the key the per-client cap and rate limit count by.

By default the client's address as the ASGI server reports it (``REMOTE_ADDR``),
with an IPv6 address grouped by its /64 prefix (one subscriber's devices share
one, and a host can pick any address in it) and an IPv4-mapped IPv6 address
read as the IPv4 one. Behind a proxy, that is the proxy's address unless the
server trusts its forwarding headers (``uvicorn --proxy-headers
--forwarded-allow-ips=...``): see docs/fair-share.md. ``GUEST_CLIENT_KEY``
names a function of the request to use instead (a session, a login). Only a
keyed hash of the key ever leaves this module: addresses are never stored.

One subscriber usually gets a whole /56 or /48 (256 or 65,536 /64s), so a
client keyed by an IPv6 address also belongs to the wider networks of
``GUEST_IPV6_PREFIX_LIMITS`` (by default its /56 and /48), each allowed a
multiple of the per-client cap and rate, whichever of its /64s ask.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.http import HttpRequest
from django.utils.module_loading import import_string

from ..conf import app_settings
from .hashing import CLIENT, keyed_hash

logger = logging.getLogger("guest_queue")

ClientKey = Callable[[HttpRequest], str]
#: Length of the client id handed to the queue and stored in the history.
ID_CHARS = 32


#: Wider groups a client belongs to: (opaque id, multiple of the per-client figures).
Groups = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Client:
    """Who asks, as the cap and the rate limit count it: opaque ids only."""

    #: The keyed hash of the client's key.
    id: str
    #: The wider IPv6 networks around the client's address, narrowest first, each with
    #: its multiple of the per-client cap and rate (empty for IPv4 and custom keys).
    groups: Groups = ()


def prefix_limits(value: Any) -> tuple[tuple[int, int], ...] | None:
    """``GUEST_IPV6_PREFIX_LIMITS`` as (prefix length, multiple) pairs, narrowest first;
    None when malformed. Keys may be digit strings (JSON from the environment)."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        return None
    pairs = []
    for prefix, multiple in value.items():
        if isinstance(prefix, str) and prefix.strip().isdigit():
            prefix = int(prefix)
        if isinstance(prefix, bool) or not isinstance(prefix, int) or not 1 <= prefix <= 63:
            return None
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            return None
        pairs.append((prefix, multiple))
    if len({prefix for prefix, _ in pairs}) != len(pairs):
        return None  # "56" and 56 both
    return tuple(sorted(pairs, reverse=True))


def groups_of_address(address: str) -> Groups:
    """The opaque ids of the wider IPv6 networks ``address`` belongs to, with multiples."""
    if _plain_ipv4(address):
        return ()
    limits = prefix_limits(app_settings.IPV6_PREFIX_LIMITS)
    if not limits:
        return ()
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return ()
    if not isinstance(ip, ipaddress.IPv6Address) or ip.ipv4_mapped is not None:
        return ()
    return tuple(
        (id_of_key(str(ipaddress.IPv6Network((ip, prefix), strict=False))), multiple)
        for prefix, multiple in limits
    )


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
    return _custom_key(request) or address_key(request)


def _custom_key(request: HttpRequest) -> str:
    """What ``GUEST_CLIENT_KEY`` names the client; empty when unset or it fails."""
    path = app_settings.CLIENT_KEY
    if path:
        try:
            key = _load(path)(request)
        except Exception:
            logger.exception("GUEST_CLIENT_KEY %s failed; keying by address", path)
        else:
            if key:
                return str(key)
    return ""


def client_of(request: HttpRequest) -> Client:
    """The request's client: the id of its key and, keyed by address, its wider networks.

    A ``GUEST_CLIENT_KEY`` that names the client otherwise (a session, a login) has
    no networks; one that falls back to the address for this request has them.
    """
    address = str(request.META.get("REMOTE_ADDR") or "")
    key = _custom_key(request)
    if key and key != key_of_address(address):
        return Client(id_of_key(key))
    return client_of_address(address)


def client_of_address(address: str) -> Client:
    """``client_of`` for the default key, from an address string (an ASGI scope's)."""
    key = key_of_address(address)
    # An IPv4 address (or none) is its own key: no wider network to look up.
    groups = () if key == address else groups_of_address(address)
    return Client(id_of_key(key), groups)


def client_id(request: HttpRequest) -> str:
    """The opaque id of the request's client: a keyed hash of its key, never the address."""
    return id_of_key(client_key(request))


def id_of_key(key: str) -> str:
    """The opaque id for a client key."""
    return keyed_hash(CLIENT, key)[:ID_CHARS]
