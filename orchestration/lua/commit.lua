-- Commit one step's handoff atomically: its TaskResult, its output under output_key,
-- a history entry, the version bump and, when it ends the workflow, the final status.
-- A step already committed is a duplicate delivery: nothing is written.
-- KEYS: meta, data, results, history, running, plan
-- ARGV: step_id, output_key, output_json, result_json, history_json, advance,
--       outcome ('continue'|'complete'|'fail'), now, error, retention, channel
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'missing', 0}
end
if status ~= 'running' then
  redis.call('HDEL', KEYS[5], ARGV[1])
  return {'not_running', status}
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return {'duplicate', tonumber(redis.call('HGET', KEYS[1], 'version'))}
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
if ARGV[2] ~= '' and ARGV[7] ~= 'fail' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
redis.call('HDEL', KEYS[5], ARGV[1])
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
if ARGV[6] == '1' then
  redis.call('HINCRBY', KEYS[1], 'current_step', 1)
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[8])
local entry = cjson.decode(ARGV[5])
entry['version'] = version
redis.call('RPUSH', KEYS[4], cjson.encode(entry))
local final = nil
if ARGV[7] == 'fail' then
  final = 'failed'
  redis.call('HSET', KEYS[1], 'error', ARGV[9], 'failed_step', ARGV[1])
elseif ARGV[7] == 'complete' then
  final = 'completed'
end
if final then
  redis.call('HSET', KEYS[1], 'status', final, 'finished_at', ARGV[8])
  redis.call('RPUSH', KEYS[4], cjson.encode({event = 'workflow_' .. final, status = final,
    step = ARGV[1], error = (final == 'failed') and ARGV[9] or nil, version = version,
    timestamp = ARGV[8]}))
  local ttl = tonumber(ARGV[10])
  if ttl > 0 then
    for i = 1, 6 do
      redis.call('EXPIRE', KEYS[i], ttl)
    end
  end
end
redis.call('PUBLISH', ARGV[11], cjson.encode({event = 'committed', step = ARGV[1],
  version = version, status = final or status}))
return {'committed', version}
