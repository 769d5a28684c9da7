-- Create a workflow once. KEYS: meta, plan, index, history
-- ARGV: workflow_id, name, created_at, total_steps, plan_json, history_json, score
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'workflow_id', ARGV[1], 'name', ARGV[2], 'status', 'created',
  'created_at', ARGV[3], 'updated_at', ARGV[3], 'current_step', 0, 'total_steps', ARGV[4],
  'version', 0)
redis.call('SET', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[6])
return 1
