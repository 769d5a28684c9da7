-- Mark a step as running if its workflow is. KEYS: meta, running
-- ARGV: step_id, running_json, channel
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return 'missing'
end
if status == 'running' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('PUBLISH', ARGV[3], cjson.encode({event = 'step_started', step = ARGV[1]}))
end
return status
