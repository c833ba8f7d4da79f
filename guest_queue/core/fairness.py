"""Fair share in one process: how many requests each client has open.

A client is the opaque id the Django layer derives from the request (a keyed
hash of its address, or whatever ``GUEST_CLIENT_KEY`` returns); the queue never
sees an address. A client may also belong to wider groups (the IPv6 /56 and /48
around its /64), each an opaque id with its own cap, a multiple of the client's:
one subscriber with thousands of /64s still holds a bounded share. Each open
request holds one unit of its client's allowance, and one of each of its
groups', from acceptance until it has left the queue (slot or place given
back), and releasing is idempotent, so a request that ends several ways at once
is released once. ``backends.redis.scripts`` keeps the same counts in Redis for
a shared queue.
"""

from __future__ import annotations

from collections.abc import Sequence

#: A wider group a client belongs to: its opaque id, and its cap as a multiple of a client's.
Group = tuple[str, int]
#: Refusal codes: the client is at its cap; one of its groups is at the group's.
CLIENT_LIMIT = "client_limit"
NETWORK_LIMIT = "network_limit"


class ClientHolds:
    """Open request ids per client and group, capped (0: no cap, nothing kept)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._held: dict[str, set[str]] = {}
        self._owner: dict[str, tuple[str, ...]] = {}

    def hold(self, client: str, request_id: str, groups: Sequence[Group] = ()) -> str | None:
        """Count the request against its client and groups; None once counted, else the
        refusal's code (``client_limit``, ``network_limit``) and nothing counted."""
        if self.cap <= 0 or not client or request_id in self._owner:
            return None
        refusal = self.refusal(client, groups)
        if refusal is not None:
            return refusal
        keys = (client, *(group for group, _ in groups))
        for key in keys:
            self._held.setdefault(key, set()).add(request_id)
        self._owner[request_id] = keys
        return None

    def refusal(self, client: str, groups: Sequence[Group] = ()) -> str | None:
        """Why one more request of this client would be refused now; None: it would not."""
        if self.cap <= 0 or not client:
            return None
        if self.count(client) >= self.cap:
            return CLIENT_LIMIT
        for group, multiple in groups:
            if self.count(group) >= self.cap * multiple:
                return NETWORK_LIMIT
        return None

    def release(self, request_id: str) -> None:
        """Stop counting the request (idempotent)."""
        keys = self._owner.pop(request_id, None)
        if keys is None:
            return
        for key in keys:
            held = self._held[key]
            held.discard(request_id)
            if not held:
                del self._held[key]

    def count(self, client: str) -> int:
        """Requests the client (or group) has open."""
        return len(self._held.get(client, ()))

    @property
    def clients(self) -> int:
        """Clients and groups with at least one request open."""
        return len(self._held)
