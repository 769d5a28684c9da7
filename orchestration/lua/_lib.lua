-- Prepended to every script. KEYS are always, in this order, a workflow's keys
-- (see orchestration/keys.py), then the index of workflows.
local META, PLAN, DATA, RESULTS, HISTORY = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local RUNNING, VERSIONS, ARCHIVE, TASKS, DYNAMIC = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local STEPS = KEYS[11]
local N_WORKFLOW_KEYS = 11
local INDEX, METRICS, ACTIVE = KEYS[12], KEYS[13], KEYS[14]
local N_FIXED_KEYS = 14

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

local function publish(channel, message)
  redis.call('PUBLISH', channel, cjson.encode(message))
end

-- A change of the workflow's status goes to its status channel as well as its events.
local function publish_status(spec, message)
  local encoded = cjson.encode(message)
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

local function track(ids)
  if ids and #ids > 0 then
    redis.call('SADD', TASKS, unpack(ids))
  end
end

-- Task messages that go with this change (workers/outbox.py). Their ids are tracked
-- (for cancel to revoke); when the broker is this Redis, the messages themselves are
-- sent here too: their queue keys (or event channels) follow the fixed KEYS and their
-- payloads follow the script's own ARGV; spec.ops has one letter for each, 'l' (LPUSH
-- onto a queue) or 'p' (PUBLISH an event). The first spec.sends go now; the next
-- spec.joins are the aggregate of the group this change starts (spec.arm), kept until
-- the group's last branch ends (fire).
local function push(ops, first, count)
  local base = #ARGV - (#KEYS - N_FIXED_KEYS)
  local out = {}
  for i = first, first + count - 1 do
    table.insert(out, {string.sub(ops, i, i), KEYS[N_FIXED_KEYS + i], ARGV[base + i]})
  end
  return out
end

local function deliver(messages)
  for _, m in ipairs(messages) do
    redis.call(m[1] == 'p' and 'PUBLISH' or 'LPUSH', m[2], m[3])
  end
end

local function send(spec)
  track(spec.track)
  deliver(push(spec.ops or '', 1, spec.sends or 0))
  if spec.arm then
    local aggregate = {ids = spec.join_track, messages = push(spec.ops or '', (spec.sends or 0) + 1,
      spec.joins or 0)}
    redis.call('HSET', STEPS, 'joined:' .. spec.arm, 0, 'join:' .. spec.arm, cjson.encode(aggregate))
  end
end

-- The group's last branch ended: send its aggregate. Returns its task id and (on the
-- Redis broker) its message, for the caller's publish hooks.
local function fire(group)
  local armed = redis.call('HGET', STEPS, 'join:' .. group)
  if not armed then
    return '', ''
  end
  local aggregate = cjson.decode(armed)
  track(aggregate.ids)
  deliver(aggregate.messages)
  local first = aggregate.messages[1]
  return aggregate.ids[1] or '', first and first[3] or ''
end

-- Counters for Prometheus (the dashboard's /metrics): one hash for the whole prefix.
local BUCKETS = {0.05, 0.25, 1, 5, 30, 120, 600}

local function count_workflow(status)
  if METRICS then
    redis.call('HINCRBY', METRICS, 'workflows_total|' .. status, 1)
  end
end

local function observe_step(agent, task_type, status, seconds)
  if not METRICS then
    return
  end
  -- One bucket per observation (the first whose bound holds it; '+Inf' past the last):
  -- /metrics sums them into Prometheus' cumulative buckets and count when it renders.
  local label = agent .. '|' .. task_type
  local bucket = '+Inf'
  for _, le in ipairs(BUCKETS) do
    if seconds <= le then
      bucket = le
      break
    end
  end
  redis.call('HINCRBY', METRICS, 'steps_total|' .. label .. '|' .. status, 1)
  redis.call('HINCRBYFLOAT', METRICS, 'step_seconds_sum|' .. label, seconds)
  redis.call('HINCRBY', METRICS, 'step_seconds_in|' .. label .. '|' .. bucket, 1)
end
