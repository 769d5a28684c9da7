-- Send a workflow's next messages from where it stands (resume, retry, the reaper's
-- re-dispatch), if it is running in spec.run; with spec.replace, what was tracked as
-- outstanding before is superseded. Sending a group (spec.arm), its count of ended
-- branches is set to how many have already ended (spec.ends), and its aggregate goes
-- too when all of them have. Returns {'ok' | the status that refused | 'stale' (another
-- run) | 'missing', aggregate id or '', its message or ''} (scripts.SendReply).
-- ARGV: spec {run, replace, hold_at, track, sends, ops, arm, ends, join_track, joins},
--       outgoing payloads...
local spec = cjson.decode(ARGV[1])
local status = redis.call('HGET', META, 'status')
if not status then
  return {'missing', '', ''}
end
if status ~= STATUS.running or tonumber(redis.call('HGET', META, 'run')) ~= spec.run then
  if status == STATUS.paused and spec.hold_at then
    redis.call('HSETNX', META, 'paused_at', spec.hold_at)  -- resume sends what was held
  end
  return {status == STATUS.running and 'stale' or status, '', ''}
end
if spec.replace then
  redis.call('DEL', TASKS)
end
send(spec)
local aggregate, message = '', ''
if spec.arm then
  local ended = 0
  if #spec.ends > 0 then
    for _, v in ipairs(redis.call('HMGET', RESULTS, unpack(spec.ends))) do
      if v then
        ended = ended + 1
      end
    end
  end
  redis.call('HSET', STEPS, 'joined:' .. spec.arm, ended)
  if ended == #spec.ends then
    aggregate, message = send_aggregate(spec.arm)
  end
end
active(true)
return {'ok', aggregate, message}
