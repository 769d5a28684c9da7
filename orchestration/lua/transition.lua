-- Move a workflow from one status to another, atomically. KEYS: meta, history
-- ARGV: from_status, to_status, now, history_json, channel
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'missing', ''}
end
if status ~= ARGV[1] then
  return {'refused', status}
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], cjson.encode({event = 'status', status = ARGV[2]}))
return {'ok', ARGV[2]}
