-- Renew (or, with release, drop) a step's lease if this execution still holds it.
-- With uncount, the attempt its begin counted is taken back (its agent never started).
-- ARGV: spec {step, owner, lease_ms, release, uncount}
local spec = cjson.decode(ARGV[1])
local held = redis.call('HGET', STEPS, 'lease:' .. spec.step)
if not held or cjson.decode(held).owner ~= spec.owner then
  return 0
end
if spec.release then
  redis.call('HDEL', STEPS, 'lease:' .. spec.step)
  redis.call('HDEL', RUNNING, spec.step)
  if spec.uncount then
    redis.call('HINCRBY', STEPS, 'attempts:' .. spec.step, -1)
  end
else
  local lease = cjson.decode(held)
  lease['until'] = now_ms() + spec.lease_ms
  redis.call('HSET', STEPS, 'lease:' .. spec.step, cjson.encode(lease))
end
return 1
