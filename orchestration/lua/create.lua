-- Create a workflow once; an existing id is left untouched (safe client retries).
-- ARGV: spec {workflow_id, name, now, total_steps, score}, plan_json, history_json
local spec = cjson.decode(ARGV[1])
if redis.call('EXISTS', META) == 1 then
  return 0
end
redis.call('HSET', META, 'workflow_id', spec.workflow_id, 'name', spec.name, 'status', 'created',
  'created_at', spec.now, 'updated_at', spec.now, 'current_step', 0,
  'total_steps', spec.total_steps, 'version', 0, 'run', 1, 'handoffs', 0)
redis.call('SET', PLAN, ARGV[2])
redis.call('ZADD', INDEX, spec.score, spec.workflow_id)
redis.call('RPUSH', HISTORY, ARGV[3])
return 1
