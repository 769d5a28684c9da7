-- Admission of one step under its rate and concurrency limits (orchestration/state/limiter.py),
-- atomically, whatever the number of workers. Not prefixed by _lib.lua: its KEYS are
--   1 the overrides hash (limit name -> JSON values set by `baton limits set`)
--   2 the set of budgets ever used ("name\tkey"), for `baton limits`
--   3 the workflow's throttled hash (step -> why and until when, while it waits)
--   4 the workflow's event stream
--   then five per limit (orchestration/state/keys.py BudgetKeys; the rate hash's field:
--   fields.py RateField): its budget's rate state (hash: tat, the GCRA theoretical arrival
--   time: the next free turn), slots (zset owner -> expiry ms) and
--   waiters (zset owner -> first refusal ms), polled (zset owner -> last ask ms) and
--   reserved (zset owner -> the time of its rate turn)
-- ARGV[1]: {owner, step, reserved, item, slot_ttl_ms, horizon_ms, retry_ms, near_ms,
--           allowance_ms, stream_maxlen, limits = [{name, key, rate_ms, concurrency}]}
--   (item: the owner is one item of the map `step`: the map shows as throttled while
--   any of its items waits, and its note stays until its `until` has passed)
-- Reply: {'admitted', wait_ms, turn} (start the call at turn, ms since the epoch, if rated) | {'reserved',
-- wait_ms, name} (come back then: its turn is held) | {'wait', wait_ms, name, why} (try
-- again then; nothing is held).
--
-- ARGV[1] {op = 'release', owner, channel, limits}: the owner's concurrency slots are
-- given back, and the owners first in line for them are published on `channel` (a JSON
-- list), so that their workers wake them at once. Reply: how many were woken.
local OVERRIDES, KNOWN, THROTTLED, STREAM = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local spec = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local limits = {}
for i, lim in ipairs(spec.limits) do
  local base = 4 + (i - 1) * 5
  local l = {name = lim.name, key = lim.key, rate_ms = lim.rate_ms, concurrency = lim.concurrency,
    tat = KEYS[base + 1], slots = KEYS[base + 2], waiting = KEYS[base + 3], polled = KEYS[base + 4],
    reserved = KEYS[base + 5]}
  local override = redis.call('HGET', OVERRIDES, lim.name)
  if override then
    local o = cjson.decode(override)
    l.rate_ms, l.concurrency = o.rate_ms, o.concurrency
  end
  if l.rate_ms == cjson.null then l.rate_ms = nil end
  if l.concurrency == cjson.null then l.concurrency = nil end
  redis.call('SADD', KNOWN, lim.name .. '\t' .. lim.key)
  limits[i] = l
end

if spec.op == 'release' then
  local wake, seen = {}, {}
  for _, l in ipairs(limits) do
    redis.call('ZREM', l.slots, spec.owner)
    if l.concurrency then
      redis.call('ZREMRANGEBYSCORE', l.slots, '-inf', now)
      local free = l.concurrency - redis.call('ZCARD', l.slots)
      if free > 0 then
        for _, waiter in ipairs(redis.call('ZRANGE', l.waiting, 0, free - 1)) do
          if not seen[waiter] then
            seen[waiter] = true
            wake[#wake + 1] = waiter
          end
        end
      end
    end
  end
  if #wake > 0 then
    redis.call('PUBLISH', spec.channel, cjson.encode(wake))
  end
  return #wake
end

local function mark(why, name, wait)
  local first = redis.call('HEXISTS', THROTTLED, spec.step) == 0
  local note = cjson.encode({step = spec.step, limit = name, why = why, ['until'] = now + wait})
  redis.call('HSET', THROTTLED, spec.step, note)
  if first then
    redis.call('XADD', STREAM, 'MAXLEN', '~', spec.stream_maxlen, '*', 'data',
      cjson.encode({event = 'throttled', step = spec.step, data = cjson.decode(note)}))
  end
end

-- 1. Concurrency: room for this step, and no older waiter left without room (FIFO).
for _, l in ipairs(limits) do
  if l.concurrency then
    redis.call('ZREMRANGEBYSCORE', l.slots, '-inf', now)
    -- A waiter that stopped asking (cancelled, its worker gone) gives up its place.
    for _, gone in ipairs(redis.call('ZRANGEBYSCORE', l.polled, '-inf', now - 30000)) do
      redis.call('ZREM', l.waiting, gone)
      redis.call('ZREM', l.polled, gone)
    end
    if not redis.call('ZSCORE', l.slots, spec.owner) then
      local free = l.concurrency - redis.call('ZCARD', l.slots)
      local ahead = redis.call('ZRANK', l.waiting, spec.owner) or redis.call('ZCARD', l.waiting)
      if ahead >= free then
        redis.call('ZADD', l.waiting, 'NX', now, spec.owner)
        redis.call('ZADD', l.polled, now, spec.owner)
        mark('concurrency', l.name, spec.retry_ms)
        return {'wait', spec.retry_ms, l.name, 'concurrency'}
      end
    end
  end
end

-- 2. Rate: GCRA without burst. A step is given the next turn of the limits it is under
-- (turns rate_ms apart, in arrival order) and its call starts at its turn: a turn within
-- near_ms is waited out in its worker ('admitted' with the wait), a farther one is kept
-- while the step's message is put back to come in time for it ('reserved'). A call is
-- never started before its turn, and at most allowance_ms after it (rate_ms leaves that
-- much per period): a step that comes back later than that takes the next free turn
-- instead, as a late call would crowd the turns after it.
local at, name = nil, nil
local rated = false  -- under a rate at all: the call's start is then checked against its turn
for _, l in ipairs(limits) do
  rated = rated or l.rate_ms ~= nil
end
if spec.reserved then
  for _, l in ipairs(limits) do
    if l.rate_ms then
      local turn = redis.call('ZSCORE', l.reserved, spec.owner)
      if turn and (not at or tonumber(turn) > at) then
        at, name = tonumber(turn), l.name
      end
    end
  end
  if at and now > at + spec.allowance_ms then
    at = nil  -- its turn has gone by
  end
end
if not at then
  at = now
  for _, l in ipairs(limits) do
    if l.rate_ms then
      local tat = tonumber(redis.call('HGET', l.tat, 'tat') or '0')
      if tat > at then
        at, name = tat, l.name
      end
    end
  end
  if at - now > spec.horizon_ms then
    -- Too far ahead to hold a message for: ask again nearer the time, holding nothing.
    mark('rate', name, spec.horizon_ms)
    return {'wait', spec.horizon_ms, name, 'rate'}
  end
  for _, l in ipairs(limits) do
    if l.rate_ms then
      redis.call('HSET', l.tat, 'tat', at + l.rate_ms)
      if redis.call('PTTL', l.tat) < at - now + l.rate_ms + 60000 then
        redis.call('PEXPIRE', l.tat, math.floor(at - now + l.rate_ms + 60000))
      end
    end
  end
end
local wait = at - now
if wait > spec.near_ms then
  for _, l in ipairs(limits) do
    if l.rate_ms then
      redis.call('ZREMRANGEBYSCORE', l.reserved, '-inf', now - 60000)
      redis.call('ZADD', l.reserved, at, spec.owner)
    end
  end
  mark('rate', name, wait)
  -- (back a little before its turn: the rest is waited out in the worker)
  return {'reserved', math.ceil(wait - spec.near_ms / 2), name}
end
for _, l in ipairs(limits) do
  if l.rate_ms then
    redis.call('ZREM', l.reserved, spec.owner)
  end
end

-- 3. Admitted: take a slot of every concurrency limit.
for _, l in ipairs(limits) do
  if l.concurrency then
    redis.call('ZADD', l.slots, now + spec.slot_ttl_ms, spec.owner)
    redis.call('ZREM', l.waiting, spec.owner)
    redis.call('ZREM', l.polled, spec.owner)
  end
end
if spec.item then
  -- (other items of the map may still wait: its note goes once its time has passed)
  local note = redis.call('HGET', THROTTLED, spec.step)
  if note and tonumber(cjson.decode(note)['until']) <= now then
    redis.call('HDEL', THROTTLED, spec.step)
  end
else
  redis.call('HDEL', THROTTLED, spec.step)
end
return {'admitted', math.max(0, math.ceil(wait)), rated and tostring(at) or ''}
