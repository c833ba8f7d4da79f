"""Fair share in one process: how many requests each client has open.

A client is the opaque id the Django layer derives from the request (a keyed
hash of its address, or whatever ``GUEST_CLIENT_KEY`` returns); the queue never
sees an address. Each open request holds one unit of its client's allowance
from acceptance until it has left the queue (slot or place given back), and
releasing is idempotent, so a request that ends several ways at once is
released once. ``backends.redis.scripts`` keeps the same count in Redis for a shared
queue.
"""

from __future__ import annotations


class ClientHolds:
    """Open request ids per client, capped at ``cap`` each (0: no cap, nothing kept)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._held: dict[str, set[str]] = {}
        self._owner: dict[str, str] = {}

    def hold(self, client: str, request_id: str) -> bool:
        """Count the request against its client; False when the client is at its cap."""
        if self.cap <= 0 or not client or request_id in self._owner:
            return True
        held = self._held.setdefault(client, set())
        if len(held) >= self.cap:
            if not held:
                del self._held[client]
            return False
        held.add(request_id)
        self._owner[request_id] = client
        return True

    def release(self, request_id: str) -> None:
        """Stop counting the request (idempotent)."""
        client = self._owner.pop(request_id, None)
        if client is None:
            return
        held = self._held[client]
        held.discard(request_id)
        if not held:
            del self._held[client]

    def count(self, client: str) -> int:
        """Requests the client has open."""
        return len(self._held.get(client, ()))

    @property
    def clients(self) -> int:
        """Clients with at least one request open."""
        return len(self._held)
