-- The outbox (orchestration/outbox.py): task messages sent in the same atomic step as
-- the state change they follow. Prepended to every script after _lib.lua.

local function track(ids)
  if ids and #ids > 0 then
    redis.call('SADD', TASKS, unpack(ids))
  end
end

-- Task messages that go with this change (orchestration/outbox.py). Their ids are tracked
-- (for cancel to revoke); when the broker is this Redis, the messages themselves are
-- sent here too: their queue keys (or event channels) follow the fixed KEYS and their
-- payloads follow the script's own ARGV; spec.ops has one letter for each, 'l' (LPUSH
-- onto a queue) or 'p' (PUBLISH an event). The first spec.sends go now; the next
-- spec.joins are the aggregate of the group this change starts (spec.arm), kept until
-- the group's last branch ends (send_aggregate).
local function push(ops, first, count)
  local base = #ARGV - (#KEYS - N_FIXED_KEYS)
  local out = {}
  for i = first, first + count - 1 do
    table.insert(out, {string.sub(ops, i, i), KEYS[N_FIXED_KEYS + i], ARGV[base + i]})
  end
  return out
end

local function deliver(messages)
  for _, m in ipairs(messages) do
    redis.call(m[1] == 'p' and 'PUBLISH' or 'LPUSH', m[2], m[3])
  end
end

-- (limit: send only the first that many messages, of spec.per_message pushes each; a
-- map's window decides how many.)
local function send(spec, limit)
  local sends = spec.sends or 0
  local n = limit and math.max(0, math.min(limit * (spec.per_message or 1), sends)) or sends
  if limit then
    track({unpack(spec.track or {}, 1, math.max(0, limit))})
  else
    track(spec.track)
  end
  deliver(push(spec.ops or '', 1, n))
  if spec.arm then
    local aggregate = {ids = spec.join_track, messages = push(spec.ops or '', sends + 1,
      spec.joins or 0)}
    redis.call('HSET', STEPS, 'joined:' .. spec.arm, 0, 'join:' .. spec.arm, cjson.encode(aggregate))
  end
end

-- The group's last branch ended: send its aggregate. Returns its task id and (on the
-- Redis broker) its message, for the caller's publish hooks.
local function send_aggregate(group)
  local armed = redis.call('HGET', STEPS, 'join:' .. group)
  if not armed then
    return '', ''
  end
  local aggregate = cjson.decode(armed)
  track(aggregate.ids)
  deliver(aggregate.messages)
  local first = aggregate.messages[1]
  return aggregate.ids[1] or '', first and first[3] or ''
end
