"""The shared queue's state changes, as Lua scripts: Redis runs each one atomically.

Keys (all under one hash tag, so a Redis Cluster keeps them on one node):
``waiting`` sorted set request id → score (with the default order, the arrival:
microseconds of Redis's own clock, strictly increasing; with tiers or fairness,
the sort key ``core.ordering`` describes, in the same microseconds, and the
arrival kept in ``arrived``); ``active`` set of request ids holding a slot;
``leases`` sorted set request id → expiry (milliseconds); ``meta`` hash with
the queue's ``epoch``, ``last_score``, ``recover_until``, each tier's last tag
(``tag:<tier>``) and, once the limiter has written it, the limit in use
(``limit``, ``limit_v`` its version; see ``LIMITER``); ``owners`` hash
request id → its client's ids and ``clients`` hash id → open requests, for the
per-client cap (requests that take no place — followers, cache replays — are
held there too, with a lease but no place in ``waiting`` or ``active``). A
request's ids are its client's id, then those of the wider groups the client
belongs to (its IPv6 /56, /48), space-separated: the request counts against
each, and each has its own cap. ``arrived`` hash request id → arrival (µs), for
requests whose score is a sort key. Under ``fair`` each client's decayed use is a
key of its own, ``usage:<client id>`` ("<slot seconds> <ms when charged>"), that
expires ten half-lives after its last charge.

Every key expires (``keep``): each script that writes pushes the expiry of the
queue's keys to 100 leases (at least a minute) ahead, and every live process runs one
each third of a lease, so the keys live exactly as long as some process uses
them and nothing lingers once every process is gone.

Every script first drops expired leases (their process died or lost Redis: their
clients' counts go down with them) and
admits the head of the line into free slots; the ids it admitted are published
on the queue's channel (an empty message means only positions moved), so the
processes holding those requests start them at once.

A Redis that lost the queue (restarted without persistence, flushed) starts a
new epoch. If the caller had seen an older one, processes may still be running
requests Redis forgot, so admissions pause for one lease period while every
process re-registers its slots and places (``sync``).
"""

from __future__ import annotations

PRELUDE = """
local waiting, active, leases, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local owners, clients, arrived = KEYS[5], KEYS[6], KEYS[7]
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now = math.floor(now_us / 1000)

local function int(x)
  return string.format('%.0f', x)
end

-- The queue's keys (and ``extra``, if given) expire when no process has written for a while.
local function keep(lease_ms, extra)
  local ms = math.max(lease_ms * 100, 60000)
  for _, key in pairs({waiting, active, leases, meta, owners, clients, arrived, extra}) do
    redis.call('PEXPIRE', key, ms)
  end
end

local function epoch(seen, recover_ms)
  local current = redis.call('HGET', meta, 'epoch')
  if not current then
    current = clock[1] .. '.' .. clock[2]
    redis.call('HSET', meta, 'epoch', current)
    if seen ~= '' then
      redis.call('HSET', meta, 'recover_until', int(now + recover_ms))
    end
  end
  return current
end

local function recovering()
  return now < tonumber(redis.call('HGET', meta, 'recover_until') or '0')
end

local function words(text)
  local list = {}
  for word in string.gmatch(text, '%S+') do
    list[#list + 1] = word
  end
  return list
end

-- The per-client count: a request counts once against its client and each of its groups
-- (``ids``: the client's id, then the groups'), from own() to disown(), however it ends.
local function own(rid, ids)
  if ids ~= '' and redis.call('HSETNX', owners, rid, ids) == 1 then
    for _, id in ipairs(words(ids)) do
      redis.call('HINCRBY', clients, id, 1)
    end
  end
end

local function disown(rid)
  local ids = redis.call('HGET', owners, rid)
  if ids then
    redis.call('HDEL', owners, rid)
    for _, id in ipairs(words(ids)) do
      if redis.call('HINCRBY', clients, id, -1) <= 0 then
        redis.call('HDEL', clients, id)
      end
    end
  end
end

-- 0: within its caps; 1: the client has ``cap`` requests open; 2: one of its groups has
-- its own cap open (``multiples``: each group's cap as a multiple of ``cap``).
local function at_cap(rid, ids, cap, multiples)
  if cap <= 0 or ids == '' or redis.call('HEXISTS', owners, rid) == 1 then
    return 0
  end
  local times = words(multiples or '')
  for i, id in ipairs(words(ids)) do
    local limit = cap * (i == 1 and 1 or tonumber(times[i - 1] or '1'))
    if tonumber(redis.call('HGET', clients, id) or '0') >= limit then
      return i == 1 and 1 or 2
    end
  end
  return 0
end

local function purge()
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  for _, rid in ipairs(expired) do
    redis.call('ZREM', waiting, rid)
    redis.call('HDEL', arrived, rid)
    redis.call('SREM', active, rid)
    disown(rid)
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  end
  return #expired > 0
end

-- The limit in use: the one the limiter wrote (adapted, or shrunk for a busy upstream),
-- else the caller's own setting (the ``max active`` every script is given).
local function limit(fallback)
  return tonumber(redis.call('HGET', meta, 'limit') or fallback)
end

local function admit(max_active)
  local admitted = {}
  if recovering() then
    return admitted
  end
  local free = limit(max_active) - redis.call('SCARD', active)
  while free > 0 do
    local head = redis.call('ZPOPMIN', waiting)
    if #head == 0 then
      break
    end
    redis.call('SADD', active, head[1])
    redis.call('HDEL', arrived, head[1])
    admitted[#admitted + 1] = head[1]
    free = free - 1
  end
  return admitted
end

-- A client's use (slot seconds) as it counts now, decayed with ``half_life_ms``.
local function usage(key, half_life_ms)
  local value = redis.call('GET', key)
  if not value then
    return 0
  end
  local used, since = string.match(value, '(%S+) (%S+)')
  return tonumber(used) * math.pow(0.5, math.max(0, now - tonumber(since)) / half_life_ms)
end

local function announce(channel, admitted, moved)
  if #admitted > 0 or moved then
    redis.call('PUBLISH', channel, table.concat(admitted, ' '))
  end
end
"""

#: ARGV: request id, lease ms, max active, max waiting, epoch seen, channel, force (1/0),
#: client ids ('' for none: the client's, then its groups', space-separated), cap per
#: client (0 for none), the groups' caps as multiples of it (space-separated), then the
#: order (``core.ordering``): the tier ('' for the default order: the arrival is the
#: score), its spacing (µs), the band's offset (µs; negative: ahead of everyone waiting),
#: the half-life of clients' use in ms ('' unless fair; KEYS[8] is then the client's
#: ``usage`` key). Returns
#: {status (1 admitted, 0 waiting, -1 line full, -2 client at its cap, -3 a group at its
#: cap), position, score, epoch, waiting, active}.
#: A forced entry (an accepted request lining up again) is never refused. An entry ahead
#: of others (their positions grew) is announced like a move; one ahead of everyone (a
#: negative offset: its upstream was busy) first gives back the slot it held.
ENTER = (
    PRELUDE
    + """
local rid, lease_ms = ARGV[1], tonumber(ARGV[2])
local max_active, max_waiting = tonumber(ARGV[3]), tonumber(ARGV[4])
local front = tonumber(ARGV[13]) < 0
local current = epoch(ARGV[5], lease_ms)
local moved = purge()
announce(ARGV[6], admit(max_active), moved)
if front then
  -- Sent back ahead of everyone (its upstream was busy): it gives back its slot first.
  redis.call('SREM', active, rid)
end
local queued = redis.call('ZCARD', waiting)
local status, position, score = 0, 0, ''
local capped = ARGV[7] ~= '1' and at_cap(rid, ARGV[8], tonumber(ARGV[9]), ARGV[10]) or 0
if capped > 0 then
  return {-1 - capped, 0, '', current, queued, redis.call('SCARD', active)}
end
if queued == 0 and not recovering() and redis.call('SCARD', active) < limit(max_active) then
  redis.call('SADD', active, rid)
  status, position = 1, 1
elseif queued >= max_waiting and ARGV[7] ~= '1' then
  keep(lease_ms)
  return {-1, 0, '', current, queued, redis.call('SCARD', active)}
elseif ARGV[11] == '' and ARGV[13] == '0' then
  local last = tonumber(redis.call('HGET', meta, 'last_score') or '0')
  score = int(math.max(now_us, last + 1))
  redis.call('HSET', meta, 'last_score', score)
  redis.call('ZADD', waiting, score, rid)
  position = queued + 1
else
  local offset = tonumber(ARGV[13])
  if offset < 0 then
    score = now_us + offset
  else
    local field = 'tag:' .. ARGV[11]
    local tag = math.max(now_us, tonumber(redis.call('HGET', meta, field) or '0'))
    tag = tag + tonumber(ARGV[12])
    redis.call('HSET', meta, field, int(tag))
    score = tag + offset
    if ARGV[14] ~= '' and KEYS[8] then
      score = score + usage(KEYS[8], tonumber(ARGV[14])) * 1000000 / max_active
    end
  end
  score = int(score)
  redis.call('ZADD', waiting, score, rid)
  redis.call('HSET', arrived, rid, int(now_us))
  position = redis.call('ZRANK', waiting, rid) + 1
  if position <= queued then
    redis.call('PUBLISH', ARGV[6], '')
  end
  if front then
    -- The slot it gave back, to the head of the line (itself, unless others were sent back).
    local others = {}
    for _, id in ipairs(admit(max_active)) do
      if id == rid then
        status, position = 1, 1  -- its caller admits it: no word of it on the channel
      else
        others[#others + 1] = id
      end
    end
    announce(ARGV[6], others, false)
  end
end
redis.call('ZADD', leases, int(now + lease_ms), rid)
keep(lease_ms)
own(rid, ARGV[8])
return {status, position, score, current, redis.call('ZCARD', waiting), redis.call('SCARD', active)}
"""
)

#: A request that takes no place (it follows an identical one, or replays a cached answer)
#: still counts against its client. ARGV: request id, lease ms, max active, epoch seen,
#: channel, client ids, cap per client, the groups' multiples (as for ENTER). Returns
#: {1 held, 0 the client at its cap or -1 a group at its cap, epoch, waiting, active}.
HOLD = (
    PRELUDE
    + """
local rid, lease_ms = ARGV[1], tonumber(ARGV[2])
local current = epoch(ARGV[4], lease_ms)
local moved = purge()
announce(ARGV[5], admit(tonumber(ARGV[3])), moved)
local held = 1 - at_cap(rid, ARGV[6], tonumber(ARGV[7]), ARGV[8])
if held == 1 then
  own(rid, ARGV[6])
  redis.call('ZADD', leases, int(now + lease_ms), rid)
end
keep(lease_ms)
return {held, current, redis.call('ZCARD', waiting), redis.call('SCARD', active)}
"""
)

#: ARGV: lease ms, max active, epoch seen, channel, request ids to remove...
#: Returns {epoch, waiting, active, {admitted ids}}.
LEAVE = (
    PRELUDE
    + """
local current = epoch(ARGV[3], tonumber(ARGV[1]))
local moved = purge()
for i = 5, #ARGV do
  if redis.call('ZREM', waiting, ARGV[i]) == 1 then
    redis.call('HDEL', arrived, ARGV[i])
    moved = true
  end
  redis.call('SREM', active, ARGV[i])
  redis.call('ZREM', leases, ARGV[i])
  disown(ARGV[i])
end
local admitted = admit(tonumber(ARGV[2]))
announce(ARGV[4], admitted, moved)
keep(tonumber(ARGV[1]))
return {current, redis.call('ZCARD', waiting), redis.call('SCARD', active), admitted}
"""
)

#: KEYS[8]: this process's status key; KEYS[9]: the sorted set of live processes;
#: KEYS[10]: hand-offs by deadline. ARGV: lease ms, max active, epoch seen, channel,
#: process id, status JSON, prefix of hand-off keys ('' claims none), then triples
#: (request id, "a" for a slot held, "h" for a request held without a place, or the
#: waiting score; client ids as for ENTER, or ''). Renews every lease, puts back places and client
#: counts Redis lost, reports slots it lost, and claims hand-offs nobody adopted in time
#: (this process records them). Returns {epoch, waiting, active, {lost ids}, {position
#: of each waiting triple, 0 once admitted}, {id, hand-off JSON ('' if gone), ...}}.
SYNC = (
    PRELUDE
    + """
local lease_ms = tonumber(ARGV[1])
local current = epoch(ARGV[3], lease_ms)
local moved = purge()
local expiry = int(now + lease_ms)
local recover = recovering()
local lost = {}
for i = 8, #ARGV, 3 do
  local rid, score = ARGV[i], ARGV[i + 1]
  if score == 'a' then
    if recover or redis.call('SISMEMBER', active, rid) == 1 then
      redis.call('SADD', active, rid)
      redis.call('ZADD', leases, expiry, rid)
      own(rid, ARGV[i + 2])
    else
      lost[#lost + 1] = rid
    end
  elseif score == 'h' then
    redis.call('ZADD', leases, expiry, rid)
    own(rid, ARGV[i + 2])
  else
    if redis.call('SISMEMBER', active, rid) == 0 and not redis.call('ZSCORE', waiting, rid) then
      redis.call('ZADD', waiting, score, rid)
      moved = true
    end
    redis.call('ZADD', leases, expiry, rid)
    own(rid, ARGV[i + 2])
  end
end
local abandoned = {}
local due = {}
if ARGV[7] ~= '' then
  due = redis.call('ZRANGEBYSCORE', KEYS[10], '-inf', now, 'LIMIT', 0, 100)
end
for _, rid in ipairs(due) do
  redis.call('ZREM', KEYS[10], rid)
  -- Its lease ran out with its deadline (purge() took its place): nobody adopted it. A
  -- lease still running means some process renews it: adopted, it is that one's to end.
  if not redis.call('ZSCORE', leases, rid) then
    redis.call('ZREM', waiting, rid)
    redis.call('HDEL', arrived, rid)
    redis.call('SREM', active, rid)
    disown(rid)
    local key = ARGV[7] .. rid
    abandoned[#abandoned + 1] = rid
    abandoned[#abandoned + 1] = redis.call('GET', key) or ''
    redis.call('DEL', key)
  end
end
announce(ARGV[4], admit(tonumber(ARGV[2])), moved)
local positions = {}
for i = 8, #ARGV, 3 do
  if ARGV[i + 1] ~= 'a' and ARGV[i + 1] ~= 'h' then
    local rank = redis.call('ZRANK', waiting, ARGV[i])
    positions[#positions + 1] = rank and (rank + 1) or 0
  end
end
redis.call('SET', KEYS[8], ARGV[6], 'PX', lease_ms)
redis.call('ZADD', KEYS[9], expiry, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', now)
keep(lease_ms, KEYS[9])
return {
  current, redis.call('ZCARD', waiting), redis.call('SCARD', active), lost, positions, abandoned
}
"""
)

#: KEYS: waiting, active, live processes. ARGV: prefix of status keys, this process's id.
#: Returns {waiting, active, {status JSON of every other live process}}.
STATUS = """
local figures = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if id ~= ARGV[2] then
    local value = redis.call('GET', ARGV[1] .. id)
    if value then
      figures[#figures + 1] = value
    end
  end
end
return {redis.call('ZCARD', KEYS[1]), redis.call('SCARD', KEYS[2]), figures}
"""

#: KEYS: waiting, active, and arrived (optional). ARGV: request id.
#: Returns {1, position, arrival (µs)} while it waits, {2} while it holds a slot, {0} if neither.
LOCATE = """
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
if rank then
  local arrival = KEYS[3] and redis.call('HGET', KEYS[3], ARGV[1])
  arrival = arrival or redis.call('ZSCORE', KEYS[1], ARGV[1])
  return {1, rank + 1, arrival}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  return {2}
end
return {0}
"""

#: The limiter's pass, run by every process about once a second. KEYS: meta, samples
#: (a list), the limiter's lease, waiting, active. ARGV: process id, lease ms, then this
#: process's samples ("<limit version> <seconds to first chunk>", or "b <retry after>"
#: for a busy upstream). Pushes the samples; the process holding the lease (taking it
#: when free) pops every process's. Returns {1 if it holds the lease, {samples popped},
#: limit ('' if none written), its version, waiting, active}.
LIMITER = """
local meta, samples, lease = KEYS[1], KEYS[2], KEYS[3]
local me, lease_ms = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV do
  redis.call('RPUSH', samples, ARGV[i])
end
if #ARGV > 2 then
  redis.call('LTRIM', samples, -5000, -1)
  redis.call('PEXPIRE', samples, math.max(lease_ms * 100, 60000))
end
local holder = redis.call('GET', lease)
local leading, popped = 0, {}
if holder == me or (not holder and redis.call('SET', lease, me, 'PX', lease_ms, 'NX')) then
  redis.call('PEXPIRE', lease, lease_ms)
  leading = 1
  popped = redis.call('LRANGE', samples, 0, -1)
  redis.call('DEL', samples)
end
return {
  leading, popped, redis.call('HGET', meta, 'limit') or '',
  redis.call('HGET', meta, 'limit_v') or '0',
  redis.call('ZCARD', KEYS[4]), redis.call('SCARD', KEYS[5])
}
"""

#: The lease holder writes the limit in use. KEYS: the queue's (as every script above),
#: then the limiter's lease, last. ARGV: lease ms, limit, its version, channel, process
#: id. A higher limit admits the head of the line at once. Returns 1, or 0 if the caller
#: no longer holds the lease.
SET_LIMIT = (
    PRELUDE
    + """
if redis.call('GET', KEYS[#KEYS]) ~= ARGV[5] then
  return 0
end
redis.call('HSET', meta, 'limit', ARGV[2], 'limit_v', ARGV[3])
local moved = purge()
announce(ARGV[4], admit(tonumber(ARGV[2])), moved)
keep(tonumber(ARGV[1]))
return 1
"""
)

#: KEYS: the limiter's lease. ARGV: process id. Gives the lease back if the caller holds it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: Charge clients for the slots their requests held (``fair``). KEYS: each client's
#: ``usage`` key. ARGV: half-life ms, then the seconds to add to each key in turn.
#: Their use decays first; each key lives ten half-lives past its last charge.
CHARGE = """
local clock = redis.call('TIME')
local now = math.floor((tonumber(clock[1]) * 1000000 + tonumber(clock[2])) / 1000)
local half_life_ms = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local used = 0
  local value = redis.call('GET', key)
  if value then
    local before, since = string.match(value, '(%S+) (%S+)')
    used = tonumber(before) * math.pow(0.5, math.max(0, now - tonumber(since)) / half_life_ms)
  end
  used = used + tonumber(ARGV[i + 1])
  local text = string.format('%.6f %.0f', used, now)
  redis.call('SET', key, text, 'PX', string.format('%.0f', half_life_ms * 10))
end
return #KEYS
"""
