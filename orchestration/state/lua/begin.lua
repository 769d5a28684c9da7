-- A step is about to run. It runs only if its workflow runs (in this run), the step has
-- no committed result, and no other live execution holds its lease; it then takes the
-- lease (renewed by a heartbeat while the agent works) and counts an attempt. A lease
-- left by an execution that died is recorded as a lost attempt and taken over.
-- When the workflow is paused, the step records that it stopped here.
-- Returns {status | 'missing' | 'stale' | 'committed' | 'leased', attempt}.
-- ARGV: spec {step, running_json, run, channel, owner, worker, lease_ms, now, task_id,
--             data_keys (absent: all), fields, inserted_before}
local spec = cjson.decode(ARGV[1])
local meta = redis.call('HMGET', META, 'status', 'run')
local status = meta[1]
if not status then
  return {'missing', 0}
end
if tonumber(meta[2]) ~= spec.run then
  return {'stale', 0}
end
if redis.call('HEXISTS', RESULTS, spec.step) == 1 then
  if spec.task_id then
    redis.call('SREM', TASKS, spec.task_id)  -- a duplicate: nothing of it is outstanding
  end
  return {'committed', 0}
end
if status == STATUS.paused then
  redis.call('HSETNX', META, 'paused_at', spec.step)
  return {status, 0}
end
if status ~= STATUS.running then
  return {status, 0}
end
local attempt, lease = take_lease(spec.step, spec)
if not attempt then
  if redis.call('HINCRBY', STEPS, 'deferred:' .. spec.step, 1) == 1 then
    history({event = EVENT.redelivery_deferred, step = spec.step, worker = spec.worker,
      error = 'delivered again while ' .. tostring(lease.worker) .. ' still runs it',
      timestamp = spec.now})
  end
  return {'leased', 0}
end

-- The state the step may see, in the same round trip: shared_data (all of it, or its
-- context_keys), and the results it is shown (earlier top-level and inserted steps and
-- its branch predecessors: never a sibling's, never the whole history of a big group).
local fields = spec.fields or {}
if spec.inserted_before then
  for _, id in ipairs(redis.call('HKEYS', DYNAMIC)) do
    local node = tonumber(string.match(id, '^step_(%d+)%.h'))
    if node and node < spec.inserted_before then
      table.insert(fields, id)
    end
  end
end
local data, results = visible_state(spec.data_keys, fields)
return {status, attempt, data, results}
