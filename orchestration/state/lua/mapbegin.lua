-- (The maps hash's fields: orchestration/state/fields.py, MapField.)
-- A map's message is about to run a batch: it takes the next one in line for this run
-- (a message delivered again keeps the one it took: claims are by Celery task id), skips
-- batches committed already, and takes that batch's lease as begin.lua takes a step's.
-- In the same round trip it loads what the items may see (shared_data: all, or
-- spec.data_keys; the results in spec.fields), the batch's items (a JSON list) and the results of
-- those items from earlier runs (a retried map runs only what did not complete).
-- Returns {'ok', batch, attempt, data, results, items, earlier, base, n} or {state}: 'missing',
-- 'stale', 'paused' (it records where), another status, 'duplicate' (this message ran
-- its batch already), 'drained' (no batch left: the message ends), 'leased'.
-- ARGV: spec {map, run, task_id, owner, worker, lease_ms, running_json, size,
--             data_keys (absent: all), fields, now, channel}
local spec = cjson.decode(ARGV[1])
local meta = redis.call('HMGET', META, 'status', 'run')
local status = meta[1]
if not status then
  return {'missing'}
end
if tonumber(meta[2]) ~= spec.run then
  return {'stale'}
end
-- The map's prefix for its current epoch, and its count of items (written by its start).
local b = spec.map .. '@' .. (redis.call('HGET', MAPS, 'epoch:' .. spec.map) or '0') .. ':'
local n = tonumber(redis.call('HGET', MAPS, b .. 'n') or 0)
local R = tostring(spec.run)
local claim_field = b .. 'claim:' .. spec.task_id
local claim = redis.call('HGET', MAPS, claim_field)
if claim == 'done' then
  redis.call('SREM', TASKS, spec.task_id)
  return {'duplicate'}
end
if status ~= STATUS.running then
  -- Not run: the message ends here; resume sends another in its place, which takes the
  -- batch this one had taken (if it had: it was delivered again) from the line.
  if claim then
    local requeue = cjson.decode(redis.call('HGET', MAPS, b .. 'requeue:' .. R) or '[]')
    table.insert(requeue, tonumber(claim))
    redis.call('HSET', MAPS, b .. 'requeue:' .. R, cjson.encode(requeue))
  else
    redis.call('HINCRBY', MAPS, b .. 'unclaimed:' .. R, -1)
  end
  redis.call('HINCRBY', MAPS, b .. 'inflight:' .. R, -1)
  redis.call('HSET', MAPS, claim_field, 'done')
  redis.call('SREM', TASKS, spec.task_id)
  if status == STATUS.paused then
    redis.call('HSETNX', META, 'paused_at', spec.map)
  end
  return {status}
end

local count = tonumber(redis.call('HGET', MAPS, b .. 'todo:' .. R) or 0)
local function take()
  local requeue = cjson.decode(redis.call('HGET', MAPS, b .. 'requeue:' .. R) or '[]')
  if #requeue > 0 then
    local pos = table.remove(requeue, 1)
    redis.call('HSET', MAPS, b .. 'requeue:' .. R, cjson.encode(requeue))
    return pos
  end
  if tonumber(redis.call('HGET', MAPS, b .. 'cursor:' .. R) or 0) >= count then
    return nil
  end
  return redis.call('HINCRBY', MAPS, b .. 'cursor:' .. R, 1)
end
local pos, batch = tonumber(claim or nil), nil
while true do
  pos = pos or take()
  if not pos then
    redis.call('HINCRBY', MAPS, b .. 'inflight:' .. R, -1)
    if not claim then
      redis.call('HINCRBY', MAPS, b .. 'unclaimed:' .. R, -1)
    end
    redis.call('HSET', MAPS, claim_field, 'done')
    redis.call('SREM', TASKS, spec.task_id)
    return {'drained'}
  end
  batch = redis.call('HGET', MAPS, b .. 't:' .. R .. ':' .. pos)
  if redis.call('HGET', MAPS, b .. 'b:' .. batch) ~= R then
    break
  end
  pos = nil  -- committed meanwhile (taken again after a reset): the next one
end
if not claim then
  redis.call('HINCRBY', MAPS, b .. 'unclaimed:' .. R, -1)  -- this message took its batch
end
redis.call('HSET', MAPS, claim_field, pos)

local step = spec.map .. '#' .. batch
local attempt = take_lease(step, spec)
if not attempt then
  return {'leased'}
end
local data, results = visible_state(spec.data_keys, spec.fields or {})
local first = tonumber(batch) * spec.size
local last = math.min(first + spec.size, n) - 1
local earlier = {}
for k = first, last do
  table.insert(earlier, b .. 'r:' .. k)
end
if #earlier > 0 then
  earlier = redis.call('HMGET', MAPS, unpack(earlier))
end
for i = 1, #earlier do
  earlier[i] = earlier[i] or ''
end
local items = redis.call('HGET', MAPS, b .. 'i:' .. batch) or '[]'  -- the batch's, one JSON list
return {'ok', tonumber(batch), attempt, data, results, items, earlier, b, n}
