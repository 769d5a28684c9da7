-- Create a workflow once; an existing id is left untouched (safe client retries). Returns
-- 1 created, 0 it existed with this very plan, 2 it exists with another (scripts.CreateReply).
-- With spec.start it is started in the same step: running, its first messages sent.
-- ARGV: spec {workflow_id, name, now, total_steps, score, start, deadline_at, data,
--             parent, parent_step, parent_due, parent_run, track, sends, channel}, plan_json, history_json, outgoing payloads...
local spec = cjson.decode(ARGV[1])
if redis.call('EXISTS', META) == 1 then
  return redis.call('GET', PLAN) == ARGV[2] and 0 or 2
end
redis.call('HSET', META, 'workflow_id', spec.workflow_id, 'name', spec.name, 'status', STATUS.created,
  'created_at', spec.now, 'updated_at', spec.now, 'current_step', 0,
  'total_steps', spec.total_steps, 'version', 0, 'run', 1, 'handoffs', 0)
redis.call('SET', PLAN, ARGV[2])
for key, value in pairs(spec.data or {}) do  -- its inputs: shared_data from the start
  redis.call('HSET', DATA, key, value)
  redis.call('HSET', VERSIONS, 'd:' .. key, 0)
end
if spec.parent then  -- a sub-workflow: linked to its parent's step, which it wakes at its end
  redis.call('HSET', META, 'parent', spec.parent, 'parent_step', spec.parent_step,
    'parent_due', spec.parent_due, 'parent_run', spec.parent_run)
end
redis.call('ZADD', INDEX, spec.score, spec.workflow_id)
redis.call('RPUSH', HISTORY, ARGV[3])
if spec.start then
  redis.call('HSET', META, 'status', STATUS.running)
  if spec.deadline_at then
    redis.call('HSET', META, 'deadline_at', spec.deadline_at)
  end
  count_workflow('started')
  history({event = EVENT.workflow_started, status = STATUS.running, timestamp = spec.now})
  send(spec)
  active(true)
  publish_status(spec, {event = EVENT.status, status = STATUS.running})
end
return 1
