-- Prepended to every script (after the names of orchestration/model/names.py: EVENT,
-- METRIC, BUCKETS). KEYS are always, in this order, a workflow's keys
-- (orchestration/state/keys.py), the index of workflows, the metrics hash, the set of
-- active workflows and the due index. The fields of their hashes are spelled here as
-- literals; each is named and documented in orchestration/state/fields.py (MetaField,
-- StepField, SignalField, VersionItem, MapField, LeaseRecord, WaitRecord), and
-- tests/test_scripts.py fails on a field a script leaves that is not named there.
local META, PLAN, DATA, RESULTS, HISTORY = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local RUNNING, VERSIONS, ARCHIVE, TASKS, DYNAMIC = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local STEPS, STREAM, THROTTLED, WAITS, SIGNALS = KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local MAPS = KEYS[16]
local N_WORKFLOW_KEYS = 16
local INDEX, METRICS, ACTIVE, DUE = KEYS[17], KEYS[18], KEYS[19], KEYS[20]
local N_FIXED_KEYS = 20

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The reaper watches running workflows by their last sign of progress.
local function active(on)
  if on then
    redis.call('ZADD', ACTIVE, now_ms() / 1000, META)
  else
    redis.call('ZREM', ACTIVE, META)
  end
end

local function history(entry)
  redis.call('RPUSH', HISTORY, cjson.encode(entry))
end

local function expire_all(ttl)
  ttl = tonumber(ttl)
  if ttl and ttl > 0 then
    for i = 1, N_WORKFLOW_KEYS do
      redis.call('EXPIRE', KEYS[i], ttl)
    end
  end
end

-- Every event is kept in the workflow's stream (in order, bounded: a reader that comes
-- back misses nothing) and published on its channel (which wakes watchers at once).
local function record(encoded)
  redis.call('XADD', STREAM, 'MAXLEN', '~', STREAM_MAXLEN, '*', 'data', encoded)
end

local function publish(channel, message)
  local encoded = cjson.encode(message)
  record(encoded)
  redis.call('PUBLISH', channel, encoded)
end

-- A change of the workflow's status goes to its status channel as well as its events.
local function publish_status(spec, message)
  local encoded = cjson.encode(message)
  record(encoded)
  redis.call('PUBLISH', spec.channel, encoded)
  redis.call('PUBLISH', spec.status_channel, encoded)
end

local function contains(list, value)
  for _, v in ipairs(list) do
    if v == value then
      return true
    end
  end
  return false
end

-- The workflow's status, and the reply to give instead when it is missing or not one
-- of ``allowed``: {'missing', ''} or {'refused', status}.
local function status_among(allowed)
  local status = redis.call('HGET', META, 'status')
  if not status then
    return nil, {'missing', ''}
  end
  if not contains(allowed, status) then
    return status, {'refused', status}
  end
  return status, nil
end

-- Counters for Prometheus (the dashboard's /metrics): one hash for the whole prefix.
local function count_workflow(status)
  if METRICS then
    redis.call('HINCRBY', METRICS, METRIC.workflows_total .. '|' .. status, 1)
  end
end

-- Steps observed (one, or a map's batch of items: counted together, a few commands for
-- the lot): statuses[i] took seconds[i].
local function observe_steps(agent, task_type, statuses, seconds)
  if not METRICS then
    return
  end
  -- One bucket per observation (the first whose bound holds it; '+Inf' past the last):
  -- /metrics sums them into Prometheus' cumulative buckets and count when it renders.
  local label = agent .. '|' .. task_type
  local by_status, by_bucket, total = {}, {}, 0
  for i, status in ipairs(statuses) do
    local s = seconds[i]
    local bucket = '+Inf'
    for _, le in ipairs(BUCKETS) do
      if s <= le then
        bucket = le
        break
      end
    end
    by_status[status] = (by_status[status] or 0) + 1
    by_bucket[bucket] = (by_bucket[bucket] or 0) + 1
    total = total + s
  end
  for status, n in pairs(by_status) do
    redis.call('HINCRBY', METRICS, METRIC.steps_total .. '|' .. label .. '|' .. status, n)
  end
  redis.call('HINCRBYFLOAT', METRICS, METRIC.step_seconds_sum .. '|' .. label, total)
  for bucket, n in pairs(by_bucket) do
    redis.call('HINCRBY', METRICS, METRIC.step_seconds_in .. '|' .. label .. '|' .. bucket, n)
  end
end

local function observe_step(agent, task_type, status, seconds)
  observe_steps(agent, task_type, {status}, {seconds})
end

-- A running workflow with nothing in flight and a wait parked is waiting: it holds no
-- message, no worker, no lease, until a signal or a timer commits the wait.
-- (quiet: the caller publishes the change with its own event.)
local function settle(spec, quiet)
  if redis.call('HGET', META, 'status') == STATUS.running and redis.call('SCARD', TASKS) == 0
      and redis.call('HLEN', WAITS) > 0 then
    redis.call('HSET', META, 'status', STATUS.waiting)
    active(false)
    if not quiet then
      publish_status(spec, {event = EVENT.status, status = STATUS.waiting})
    end
    return STATUS.waiting
  end
  return nil
end

-- A sub-workflow that ends wakes its parent's step now (its timer, in the due index): the
-- timer sweep commits the step with the child's outputs, or its failure.
local function wake_parent()
  local due = redis.call('HGET', META, 'parent_due')
  if due then
    redis.call('ZADD', DUE, now_ms(), due)
  end
end

-- A workflow's end (completed, failed or cancelled; its status already set): counted,
-- its finish time kept, its keys left to expire, and its parent's step woken.
local function ended(status, spec)
  count_workflow(status)
  redis.call('HSET', META, 'finished_at', spec.now)
  expire_all(spec.retention)
  wake_parent()
end

-- Take a step's lease for spec.owner, count the attempt, mark the step running and say
-- it started. A lease a live execution holds is not taken: returns nil and that lease; a
-- lapsed one is recorded as a lost attempt, then taken. Returns the attempt.
local function take_lease(step, spec)
  local now = now_ms()
  local held = redis.call('HGET', STEPS, 'lease:' .. step)
  if held then
    local lease = cjson.decode(held)
    if lease.owner ~= spec.owner then
      if lease['until'] > now then
        return nil, lease
      end
      history({event = EVENT.attempt_lost, step = step, worker = lease.worker,
        error = 'its worker stopped renewing the lease', timestamp = spec.now})
    end
  end
  redis.call('HSET', STEPS, 'lease:' .. step,
    cjson.encode({owner = spec.owner, worker = spec.worker, ['until'] = now + spec.lease_ms}))
  local attempt = redis.call('HINCRBY', STEPS, 'attempts:' .. step, 1)
  redis.call('HSET', RUNNING, step, spec.running_json)
  publish(spec.channel, {event = EVENT.step_started, step = step})
  return attempt
end

-- The fields of hash that exist, as a flat key, value list.
local function present(hash, fields)
  local out = {}
  if #fields > 0 then
    local values = redis.call('HMGET', hash, unpack(fields))
    for i, field in ipairs(fields) do
      if values[i] then
        table.insert(out, field)
        table.insert(out, values[i])
      end
    end
  end
  return out
end

-- The state a step may see, read in its begin: shared_data (all of it, or data_keys),
-- and the results named in fields.
local function visible_state(data_keys, fields)
  local data = data_keys == nil and redis.call('HGETALL', DATA) or present(DATA, data_keys)
  return data, present(RESULTS, fields)
end
