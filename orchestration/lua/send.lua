-- Send a workflow's next messages from where it stands (resume, retry, the reaper's
-- re-dispatch), if it is running in spec.run; with spec.replace, what was tracked as
-- outstanding before is superseded. With spec.join (a group), the group's join counter
-- is first set to how many of its branches have already ended (spec.join.ends), and the
-- aggregate goes too when all of them have. Returns {'ok' | status | 'missing', joined}.
-- ARGV: spec {run, replace, track, sends, join {group, ends}, join_track, joins},
--       outgoing payloads...
local spec = cjson.decode(ARGV[1])
local status = redis.call('HGET', META, 'status')
if not status then
  return {'missing', 0}
end
if status ~= 'running' or tonumber(redis.call('HGET', META, 'run')) ~= spec.run then
  return {status, 0}
end
if spec.replace then
  redis.call('DEL', TASKS)
end
send(spec)
local joined = 0
if spec.join then
  local ended = 0
  local ends = spec.join.ends
  if #ends > 0 then
    for _, v in ipairs(redis.call('HMGET', RESULTS, unpack(ends))) do
      if v then
        ended = ended + 1
      end
    end
  end
  redis.call('HSET', STEPS, 'joined:' .. spec.join.group, ended)
  if ended == #ends then
    send_join(spec)
    joined = 1
  end
end
active(true)
return {'ok', joined}
