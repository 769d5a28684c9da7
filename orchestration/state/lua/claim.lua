-- Claim the timers due now (orchestration/state/timers.py): each is pushed reclaim_ms on,
-- so one sweeper fires it; the commit that fires it removes it, and a sweeper that dies
-- between the two leaves it to fire again after reclaim_ms.
-- KEYS: the due index. ARGV: spec {now_ms, limit, reclaim_ms}. Returns the members
-- claimed (keys.due_member: workflow|step|run).
local spec = cjson.decode(ARGV[1])
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', spec.now_ms, 'LIMIT', 0, spec.limit)) do
  redis.call('ZADD', KEYS[1], spec.now_ms + spec.reclaim_ms, m)
  table.insert(out, m)
end
return out
