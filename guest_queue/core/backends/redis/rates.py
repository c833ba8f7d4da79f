"""Fixed-window rate counters in Redis, exact under any concurrency.

One script counts an event under each of its keys, narrowest first: ``INCR``,
then ``EXPIRE`` when the count is new (or the key has no expiry), and stops at
the first key over its limit. Redis runs the script atomically, so however many
processes count at once every event gets its own number, and a key lives for
its window (plus a second), never longer, whatever else writes to Redis.

Used for the shared queue's Redis (``RedisAdmission.rate_counter``) and for
Django's Redis cache (``guest_queue.guests.ratelimit``).
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

#: KEYS: the counters, narrowest first. ARGV: seconds a new counter lives, then each
#: key's limit. Returns the index (from 1) of the first key over its limit, or 0.
COUNT = """
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 or redis.call('TTL', key) == -1 then
    redis.call('EXPIRE', key, ARGV[1])
  end
  if count > tonumber(ARGV[i + 1]) then
    return i
  end
end
return 0
"""


class RedisWindowCounter:
    """Counters under ``prefix`` in one Redis (a ``WindowCounter``)."""

    def __init__(self, client: Redis, prefix: str = "") -> None:
        self.client = client
        self.prefix = prefix
        self._count = client.register_script(COUNT)

    async def count(self, keys: Sequence[str], limits: Sequence[int], ttl_sec: int) -> int:
        reply = await self._count(keys=[self.prefix + key for key in keys], args=[ttl_sec, *limits])
        return int(reply)
