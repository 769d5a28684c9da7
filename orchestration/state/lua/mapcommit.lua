-- (The maps hash's fields: orchestration/state/fields.py, MapField.)
-- Commit one batch of a map: each item's result on its own (``r:<index>``), the map's
-- counts of completed and failed items, and the batch as committed in this run; release
-- its lease. Compare-and-set like commit.lua: nothing is written unless the workflow runs
-- (or is paused) in spec.run and the batch was not committed in it already. While it
-- runs, the commit sends one more message if batches remain in line (the window stays
-- full), and the map's aggregate once this was the run's last batch; paused, it records
-- where it stopped. Returns {state, status, messages sent (0 or 1), aggregate id, its
-- message} (scripts.MapCommitReply).
-- ARGV: spec {map, base, run, batch, step, task_id, owner, indices, ok, earlier_failed,
--             seconds, agent_id, task_type, n, track, sends, ops, now, channel},
--       one result JSON per index, outgoing payloads...
local spec = cjson.decode(ARGV[1])
local status = redis.call('HGET', META, 'status')
local b, R = spec.base, tostring(spec.run)
local function release()
  redis.call('HDEL', RUNNING, spec.step)
  redis.call('HDEL', STEPS, 'lease:' .. spec.step)
  redis.call('SREM', TASKS, spec.task_id)
end
if not status then
  return {'missing', '', 0, '', ''}
end
if (status ~= STATUS.running and status ~= STATUS.paused) or tonumber(redis.call('HGET', META, 'run')) ~= spec.run then
  release()
  return {status == STATUS.running and 'stale' or 'not_running', status, 0, '', ''}
end
if redis.call('HGET', MAPS, b .. 'b:' .. spec.batch) == R then
  release()
  return {'duplicate', status, 0, '', ''}
end
local ok, failed, statuses = 0, 0, {}
for i, index in ipairs(spec.indices) do
  redis.call('HSET', MAPS, b .. 'r:' .. index, ARGV[1 + i])
  if spec.ok[i] then
    ok = ok + 1
  else
    failed = failed + 1
  end
  statuses[i] = spec.ok[i] and STEP.completed or STEP.failed
end
observe_steps(spec.agent_id, spec.task_type, statuses, spec.seconds)
if ok > 0 then
  redis.call('HINCRBY', MAPS, b .. 'ok', ok)
end
if failed - spec.earlier_failed ~= 0 then
  redis.call('HINCRBY', MAPS, b .. 'failed', failed - spec.earlier_failed)
end
redis.call('HSET', MAPS, b .. 'b:' .. spec.batch, R, b .. 'claim:' .. spec.task_id, 'done')
local joined = redis.call('HINCRBY', MAPS, b .. 'joined:' .. R, 1)
redis.call('HINCRBY', MAPS, b .. 'inflight:' .. R, -1)
release()
redis.call('HSET', META, 'updated_at', spec.now)

local count = tonumber(redis.call('HGET', MAPS, b .. 'todo:' .. R) or 0)
local cursor = tonumber(redis.call('HGET', MAPS, b .. 'cursor:' .. R) or 0)
local queued = redis.call('HGET', MAPS, b .. 'requeue:' .. R)
local left = count - cursor + (queued and #cjson.decode(queued) or 0)
-- Batches left beyond those the messages already sent will take: one more message.
local more = left > tonumber(redis.call('HGET', MAPS, b .. 'unclaimed:' .. R) or 0)
local aggregate, message, sent = '', '', 0
if status == STATUS.running then
  if more then
    send(spec)
    redis.call('HINCRBY', MAPS, b .. 'inflight:' .. R, 1)
    redis.call('HINCRBY', MAPS, b .. 'unclaimed:' .. R, 1)
    sent = 1
  end
  if joined >= count then
    aggregate, message = send_aggregate(spec.map)
  end
  active(true)
elseif more or joined >= count then
  redis.call('HSETNX', META, 'paused_at', spec.map)  -- resume sends it on
end
publish(spec.channel, {event = EVENT.map_progress, step = spec.map,
  data = {done = tonumber(redis.call('HGET', MAPS, b .. 'ok') or 0),
    failed = tonumber(redis.call('HGET', MAPS, b .. 'failed') or 0), total = spec.n}})
return {'committed', status, sent, aggregate, message}
