-- Renew (or, with release, drop) a step's lease if this execution still holds it.
-- ARGV: spec {step, owner, lease_ms, release}
local spec = cjson.decode(ARGV[1])
local held = redis.call('HGET', STEPS, 'lease:' .. spec.step)
if not held or cjson.decode(held).owner ~= spec.owner then
  return 0
end
if spec.release then
  redis.call('HDEL', STEPS, 'lease:' .. spec.step)
  redis.call('HDEL', RUNNING, spec.step)
else
  local lease = cjson.decode(held)
  lease['until'] = now_ms() + spec.lease_ms
  redis.call('HSET', STEPS, 'lease:' .. spec.step, cjson.encode(lease))
end
return 1
