-- A step is about to run: mark it running if its workflow runs (and this is its run).
-- When the workflow is paused, remember that the step stopped here. Returns the status,
-- or 'stale' for a message from an earlier run (before a retry or rollback).
-- ARGV: spec {step, running_json, run, channel}
local spec = cjson.decode(ARGV[1])
local status = redis.call('HGET', META, 'status')
if not status then
  return 'missing'
end
if tonumber(redis.call('HGET', META, 'run')) ~= spec.run then
  return 'stale'
end
if status == 'running' then
  redis.call('HSET', RUNNING, spec.step, spec.running_json)
  publish(spec.channel, {event = 'step_started', step = spec.step})
elseif status == 'paused' then
  redis.call('HSETNX', META, 'paused_at', spec.step)
end
return status
