-- (The versions hash's items and the archive's fields: orchestration/state/fields.py,
-- VersionItem.)
-- Restore the shared state to checkpoint spec.target: every value, result and inserted
-- step written after it moves to the archive (so older versions stay readable), a map
-- begun after it starts over, and progress counters follow. The restore is itself a new version: versions only grow.
-- Returns {'ok', old status, version, run}, {'invalid', latest version} for a target that
-- is no checkpoint, or a status refusal (scripts.RestoreReply).
-- ARGV: spec {from, to, target, now, event, channel, bump_run, keep_failed,
--             archive_failed, compensation, retention}
local spec = cjson.decode(ARGV[1])
local status, refusal = status_among(spec.from)
if refusal then
  return refusal
end
local target = tonumber(spec.target)
local latest = tonumber(redis.call('HGET', META, 'version'))
if target < 0 or target > latest then
  return {'invalid', latest}  -- no such checkpoint: versions run 0..latest
end
local version = redis.call('HINCRBY', META, 'version', 1)
local changed = {}
-- Waits parked now are let go: a wait the restored run reaches again parks again.
redis.call('DEL', WAITS)
local function archive(hash, field, name, written)
  local value = redis.call('HGET', hash, name)
  if value then
    redis.call('HSET', ARCHIVE, field .. '@' .. written .. '-' .. version, value)
    redis.call('HDEL', hash, name)
  end
end
local function is_failed(name)
  local value = redis.call('HGET', RESULTS, name)
  return value and cjson.decode(value).status ~= STEP.completed
end
local fields = redis.call('HGETALL', VERSIONS)
for i = 1, #fields, 2 do
  local field, written = fields[i], tonumber(fields[i + 1])
  local kind, name = string.sub(field, 1, 1), string.sub(field, 3)
  local drop = written > target
  if kind == 'r' then
    if drop and spec.keep_failed and is_failed(name) then
      drop = false
    elseif not drop and spec.archive_failed and is_failed(name) then
      drop = true
    end
  end
  if kind == 'm' and spec.keep_failed then
    drop = false  -- the saga's restore keeps a map's items: a retry re-runs the failed ones
  end
  if drop then
    if kind == 'd' then
      archive(DATA, field, name, written)
      table.insert(changed, 'data:' .. name)
    elseif kind == 'r' then
      archive(RESULTS, field, name, written)
      table.insert(changed, 'result:' .. name)
    elseif kind == 'h' then
      redis.call('HDEL', DYNAMIC, name)
      redis.call('HINCRBY', META, 'total_steps', -1)
      table.insert(changed, 'step:' .. name)
    elseif kind == 'b' then
      redis.call('HINCRBY', META, 'current_step', -1)
    elseif kind == 'k' then
      local delta = tonumber(string.match(name, ':(-?%d+)$'))
      redis.call('HINCRBY', META, 'total_steps', -delta)
    elseif kind == 'm' then
      -- A map taken back to before it began starts over, on the list it then finds.
      redis.call('HINCRBY', MAPS, 'epoch:' .. name, 1)
      table.insert(changed, 'map:' .. name)
    end
    redis.call('HDEL', VERSIONS, field)
  end
end
local run = tonumber(redis.call('HGET', META, 'run'))
if spec.bump_run then
  run = redis.call('HINCRBY', META, 'run', 1)
end
redis.call('HSET', META, 'status', spec.to, 'updated_at', spec.now)
redis.call('HDEL', META, 'paused_at', 'reaps')
redis.call('DEL', STEPS, RUNNING)
active(spec.to == STATUS.running)
if spec.to == STATUS.paused then
  redis.call('HSET', META, 'paused_at', 'restored')  -- nothing is in flight: resume sends
end
if spec.compensation then
  redis.call('HSET', META, 'compensation', spec.compensation)
end
if spec.to == STATUS.running or spec.to == STATUS.paused then
  -- live again: the failure and what its saga did are history now, not the status
  redis.call('HDEL', META, 'error', 'failed_step', 'finished_at', 'compensation')
  redis.call('PERSIST', META)
  for i = 2, N_WORKFLOW_KEYS do
    redis.call('PERSIST', KEYS[i])
  end
elseif spec.to == STATUS.failed then
  ended(STATUS.failed, spec)
end
history({event = spec.event, status = spec.to, version = version, restored_to = target,
  changed = #changed > 0 and changed or nil, timestamp = spec.now})  -- ({} would be an object)
publish_status(spec, {event = EVENT.status, status = spec.to, version = version})
return {'ok', status, version, run}
