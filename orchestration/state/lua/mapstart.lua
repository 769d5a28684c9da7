-- (The maps hash's fields: orchestration/state/fields.py, MapField.)
-- Start a map in spec.run, or go on with it (resume, the reaper). The batches this run
-- runs (spec.todo: every batch the first time, those with an item not completed after a
-- retry) are stored once per run, by position; a message does not name its batch but
-- takes the next one when it starts (mapbegin.lua), so up to spec.window messages are
-- in flight and each commit sends one more while batches remain (mapcommit.lua).
-- With spec.reset (the reaper: nothing runs), the count in flight starts over and the
-- batches taken but never committed go back in line. The map's aggregate is armed here
-- and goes when this run's last batch commits (at once, if there is none).
-- Returns {'ok' | the status that refused | 'stale' | 'missing', messages sent,
-- aggregate id, its message}.
-- ARGV: spec {map, base, run, task_id, todo, window, reset, n, track, sends, per_message, ops, arm,
--             join_track, joins}, outgoing payloads...
local spec = cjson.decode(ARGV[1])
if spec.task_id ~= '' then
  redis.call('SREM', TASKS, spec.task_id)  -- this start's own message: done with
end
local status = redis.call('HGET', META, 'status')
if not status then
  return {'missing', 0, '', ''}
end
if status ~= STATUS.running or tonumber(redis.call('HGET', META, 'run')) ~= spec.run then
  if status == STATUS.paused then
    redis.call('HSETNX', META, 'paused_at', spec.map)  -- resume starts it again
  end
  return {status == STATUS.running and 'stale' or status, 0, '', ''}
end
local b, R = spec.base, tostring(spec.run)
if redis.call('HSETNX', MAPS, b .. 'n', spec.n) == 1 then
  -- Its items are in (written by the caller): a restore to the version it began after, or
  -- earlier, starts it over (so it counts as written by the next version).
  redis.call('HSET', VERSIONS, 'm:' .. spec.map, tonumber(redis.call('HGET', META, 'version')) + 1)
end
local count = tonumber(redis.call('HGET', MAPS, b .. 'todo:' .. R))
if not count then
  count = #spec.todo
  for pos, batch in ipairs(spec.todo) do
    redis.call('HSET', MAPS, b .. 't:' .. R .. ':' .. pos, batch)
  end
  redis.call('HSET', MAPS, b .. 'todo:' .. R, count)
  history({event = EVENT.map_started, step = spec.map, status = tostring(spec.n) .. ' items',
    timestamp = spec.now})
end
local cursor = tonumber(redis.call('HGET', MAPS, b .. 'cursor:' .. R) or 0)
local requeue = cjson.decode(redis.call('HGET', MAPS, b .. 'requeue:' .. R) or '[]')
if spec.reset then
  redis.call('HSET', MAPS, b .. 'inflight:' .. R, 0, b .. 'unclaimed:' .. R, 0)
  local now = now_ms()
  requeue = {}
  for pos = 1, cursor do
    local batch = redis.call('HGET', MAPS, b .. 't:' .. R .. ':' .. pos)
    if redis.call('HGET', MAPS, b .. 'b:' .. batch) ~= R then
      local held = redis.call('HGET', STEPS, 'lease:' .. spec.map .. '#' .. batch)
      if not held or cjson.decode(held)['until'] <= now then
        table.insert(requeue, pos)
      end
    end
  end
  redis.call('HSET', MAPS, b .. 'requeue:' .. R, cjson.encode(requeue))
end
local inflight = tonumber(redis.call('HGET', MAPS, b .. 'inflight:' .. R) or 0)
local need = math.max(0, math.min(spec.window - inflight, count - cursor + #requeue,
  #(spec.track or {})))
send(spec, need)
if need > 0 then
  redis.call('HINCRBY', MAPS, b .. 'inflight:' .. R, need)
  redis.call('HINCRBY', MAPS, b .. 'unclaimed:' .. R, need)  -- sent, no batch taken yet
end
local aggregate, message = '', ''
if tonumber(redis.call('HGET', MAPS, b .. 'joined:' .. R) or 0) >= count then
  aggregate, message = send_aggregate(spec.map)
end
publish(spec.channel, {event = EVENT.map_progress, step = spec.map,
  data = {done = tonumber(redis.call('HGET', MAPS, b .. 'ok') or 0),
    failed = tonumber(redis.call('HGET', MAPS, b .. 'failed') or 0), total = spec.n}})
active(true)
return {'ok', need, aggregate, message}
