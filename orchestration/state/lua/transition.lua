-- Change a workflow's status if it is one of spec.from. Returns
-- {state, old status, run, paused_at, outstanding task ids...}.
-- ARGV: spec {from, to, now, event, channel, track, sends, bump_run, clear_paused, error,
--             retention}, outgoing payloads...
local spec = cjson.decode(ARGV[1])
local status, refusal = status_among(spec.from)
if refusal then
  return refusal
end
local run = tonumber(redis.call('HGET', META, 'run'))
if spec.bump_run then
  run = redis.call('HINCRBY', META, 'run', 1)
end
local paused_at = redis.call('HGET', META, 'paused_at') or ''
if spec.clear_paused then
  redis.call('HDEL', META, 'paused_at')
end
redis.call('HSET', META, 'status', spec.to, 'updated_at', spec.now)
if spec.to == STATUS.running and status == STATUS.created then
  count_workflow('started')
end
if spec.error then
  redis.call('HSET', META, 'error', spec.error)
end
if spec.deadline_at then
  redis.call('HSET', META, 'deadline_at', spec.deadline_at)
end
send(spec)
active(spec.to == STATUS.running or spec.to == STATUS.compensating)
local reply = {'ok', status, run, paused_at}
if spec.to == STATUS.cancelled then
  for _, id in ipairs(redis.call('SMEMBERS', TASKS)) do
    table.insert(reply, id)
  end
  redis.call('DEL', TASKS, RUNNING, WAITS)
  ended(STATUS.cancelled, spec)
end
history({event = spec.event, status = spec.to, error = spec.error, timestamp = spec.now})
publish_status(spec, {event = EVENT.status, status = spec.to})
if spec.to == STATUS.running then
  settle(spec)  -- resumed with nothing to send and a wait parked: waiting again
end
return reply
