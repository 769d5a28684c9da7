-- Park a wait step that found no signal: the workflow then holds no message, worker or
-- lease for it, only this record, until a signal (or its timer) commits it (commit.lua
-- with spec.signal). Returns {'parked', status} or, if its signal arrived meanwhile,
-- {'signalled', status}; {'not_running', status} or {'stale', status} otherwise.
-- ARGV: spec {step, name, run, task_id, due_ms, due_member, channel, status_channel, now}
local spec = cjson.decode(ARGV[1])
local status = redis.call('HGET', META, 'status')
if status ~= STATUS.running and status ~= STATUS.paused then
  return {'not_running', status or ''}
end
if tonumber(redis.call('HGET', META, 'run')) ~= spec.run then
  return {'stale', status}
end
if spec.name ~= '' and redis.call('HEXISTS', SIGNALS, 'name:' .. spec.name) == 1 then
  return {'signalled', status}
end
redis.call('HSET', WAITS, spec.step, cjson.encode({name = spec.name, run = spec.run,
  since = spec.now, due_ms = spec.due_ms, due_member = spec.due_member}))
if spec.due_ms > 0 then
  redis.call('ZADD', DUE, spec.due_ms, spec.due_member)
end
redis.call('HDEL', RUNNING, spec.step)
redis.call('HDEL', STEPS, 'lease:' .. spec.step)
if spec.task_id ~= '' then
  redis.call('SREM', TASKS, spec.task_id)
end
history({event = EVENT.wait_parked, step = spec.step, status = spec.name, timestamp = spec.now})
publish(spec.channel, {event = EVENT.wait_parked, step = spec.step,
  data = {name = spec.name, due_ms = spec.due_ms}})
return {'parked', settle(spec) or status}
