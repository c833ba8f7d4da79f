"""Handing waiting resumable requests from a draining process to the others.

A process draining for a deploy does not end its waiting resumable requests:
it leaves their places in the shared line, keeps their leases for the resume
grace, and writes what another process needs to drive them (the question and
its context) under ``{prefix}:handoff:<id>``. When the guest resumes through
another process, that process adopts the request (atomically, so only one
does): same score, same place in line.

A hand-off nobody adopts before its lease runs out still ends somewhere: its
id waits in ``{prefix}:handoffs`` (by deadline) and the next renewal pass of
any live process claims it (``SYNC``, atomically: one process only) and
records it as cancelled, as a request nobody came back for.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ...backends.base import Ticket
from ...records import RequestRecord
from ...workflow import WorkflowRequest

#: A hand-off's data outlives its deadline this long, for the process that records it.
KEEP_AFTER_DEADLINE_MS = 600_000

#: KEYS: waiting, leases, handoffs, then one handoff key per request.
#: ARGV: grace ms, how long data outlives its deadline (ms), then per request: id, JSON,
#: and '' for one waiting in line, or the score to line up at for one that had no place
#: (it followed an identical question).
HAND_OFF = """
local waiting, leases, handoffs = KEYS[1], KEYS[2], KEYS[3]
local clock = redis.call('TIME')
local now = math.floor((tonumber(clock[1]) * 1000000 + tonumber(clock[2])) / 1000)
local grace_ms, keep_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local deadline = string.format('%.0f', now + grace_ms)
local handed = {}
for i = 3, #ARGV, 3 do
  local rid, score = ARGV[i], ARGV[i + 2]
  local waits = redis.call('ZSCORE', waiting, rid)
  if not waits and score ~= '' then
    redis.call('ZADD', waiting, score, rid)
    waits = score
  end
  if waits then
    redis.call('ZADD', leases, deadline, rid)
    redis.call('ZADD', handoffs, deadline, rid)
    local key = KEYS[4 + (i - 3) / 3]
    redis.call('SET', key, ARGV[i + 1], 'PX', grace_ms + keep_ms)
    handed[#handed + 1] = rid
  end
end
if #handed > 0 then
  redis.call('PEXPIRE', handoffs, grace_ms + keep_ms)
end
return handed
"""

#: KEYS: waiting, active, leases, the request's handoff key, handoffs. ARGV: id, lease ms.
#: Returns nil, or {hand-off JSON, "w" + score and 1-based rank, or "a" (admitted)}.
ADOPT = """
local waiting, active, leases, key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rid = ARGV[1]
local data = redis.call('GET', key)
if not data then
  return nil
end
local clock = redis.call('TIME')
local now = math.floor((tonumber(clock[1]) * 1000000 + tonumber(clock[2])) / 1000)
local score = redis.call('ZSCORE', waiting, rid)
local admitted = redis.call('SISMEMBER', active, rid) == 1
if not score and not admitted then
  return nil
end
redis.call('DEL', key)
redis.call('ZREM', KEYS[5], rid)
redis.call('ZADD', leases, string.format('%.0f', now + tonumber(ARGV[2])), rid)
if admitted then
  return {data, 'a', '', 0}
end
return {data, 'w', score, redis.call('ZRANK', waiting, rid) + 1}
"""


def handoff_json(ticket: Ticket) -> str:
    """What another process needs to drive the request."""
    record, request = ticket.record, ticket.request
    return json.dumps(
        {
            "query": record.query,
            "client_hint": record.client_hint,
            "client_groups": [list(group) for group in record.client_groups],
            "tier": record.tier,
            "max_wait_sec": record.max_wait_sec,
            "language": request.language,
            "history": [list(turn) for turn in request.history],
            "created_at": record.created_at,
        }
    )


def adopted_ticket(request_id: str, data: str) -> Ticket:
    """The request rebuilt from its hand-off, as this process's own ticket."""
    raw: dict[str, Any] = json.loads(data)
    record = RequestRecord(
        request_id=request_id,
        query=str(raw["query"]),
        client_hint=raw.get("client_hint"),
        client_groups=tuple((str(g), int(m)) for g, m in raw.get("client_groups") or ()),
        tier=str(raw.get("tier") or "guest"),
    )
    budget = raw.get("max_wait_sec")
    if isinstance(budget, int | float) and not isinstance(budget, bool) and budget > 0:
        record.max_wait_sec = float(budget)
    created_at = raw.get("created_at")
    if isinstance(created_at, int | float):
        # Keep the wait the guest has already done (the monotonic clock is this process's).
        record.created_at = float(created_at)
        record.created_mono = time.monotonic() - max(0.0, time.time() - created_at)
    history = tuple((str(r), str(c)) for r, c in raw.get("history") or ())
    request = WorkflowRequest(
        request_id, record.query, language=raw.get("language"), history=history
    )
    return Ticket(record, request)
