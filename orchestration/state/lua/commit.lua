-- Commit one step's handoff atomically: its TaskResult, its output under output_key,
-- a versioned history entry (a checkpoint), the tracked task ids and, when it ends the
-- workflow, its final status. Compare-and-set: nothing is written unless the workflow
-- is running (or paused) in the same run and the step has not been committed already;
-- a refused commit is itself recorded in the history.
-- What goes next is sent with it (see send() in _outbox.lua) while the workflow runs: the
-- next step or group, or, when spec.join names this step's group, the group's aggregate
-- once this was the last of its branches to end. Returns {state, version, status,
-- the id and message of the aggregate it sent, or '', ''} (scripts.CommitReply).
-- The kinds of commit (orchestration/state/commit.py, CommitRequest) each have their part
-- below: a parked wait woken by a signal or its timer (spec.signal {name, id, by, timer};
-- a signal for a wait not parked yet is kept for it, a signal_id seen before changes
-- nothing), a run-time handoff, a branch's choice, a sub-workflow's outputs, a group's
-- branch joining, the workflow's end.
-- ARGV: spec {step, node, output_key, advance, outcome, now, error, retention, run,
--             agent_id, task_type, status, seconds (for the metrics),
--             task_id, track, sends, ops, join {group, total}, arm, join_track, joins,
--             handoff_id, max_handoffs, add_steps, skipped {step: result JSON}, channel},
--       output_json, result_json, history_json, handoff_json, outgoing payloads...
local spec = cjson.decode(ARGV[1])
local status = redis.call('HGET', META, 'status')

local function version_now()
  return tonumber(redis.call('HGET', META, 'version'))
end

local function reply(state)
  return {state, version_now(), status, '', ''}
end

local function refuse(state)
  redis.call('HDEL', RUNNING, spec.step)
  if spec.task_id ~= '' then
    redis.call('SREM', TASKS, spec.task_id)
  end
  history({event = EVENT.commit_refused, step = spec.step, status = state, timestamp = spec.now,
    error = 'workflow is ' .. status .. ' (' .. state .. ')'})
  return reply(state)
end

-- Whether this commit may be written: nil if so, else the reply that says why not.
local function refusal(exists)
  local sig = spec.signal
  if sig and sig.id ~= '' and redis.call('HEXISTS', SIGNALS, 'id:' .. sig.id) == 1 then
    return reply('duplicate_signal')  -- the same signal_id again: applied (or kept) once
  end
  if status ~= STATUS.running and status ~= STATUS.paused and not (sig and status == STATUS.waiting) then
    return sig and reply('not_running') or refuse('not_running')
  end
  if tonumber(redis.call('HGET', META, 'run')) ~= spec.run then
    return refuse('stale')
  end
  if exists then
    return refuse('duplicate')
  end
  return nil
end

-- A signal (or a timer) for a wait step: committed only if the wait is parked there;
-- one not reached yet (or whose message is on its way) is kept for the wait to find.
-- Returns nil to go on with the commit, else the reply.
local function wake_wait(sig)
  local raw = redis.call('HGET', WAITS, spec.step)
  local parked = raw and cjson.decode(raw)
  if not parked or parked.run ~= spec.run then
    if sig.timer then
      return reply('not_waiting')
    end
    if redis.call('HEXISTS', SIGNALS, 'name:' .. sig.name) == 1 then
      return reply('already_signalled')
    end
    redis.call('HSET', SIGNALS, 'name:' .. sig.name, ARGV[2],
      'meta:' .. sig.name, cjson.encode({id = sig.id, by = sig.by, at = spec.now}))
    if sig.id ~= '' then
      redis.call('HSET', SIGNALS, 'id:' .. sig.id, sig.name)
    end
    history({event = EVENT.signal_kept, step = spec.step, status = sig.name, by = sig.by,
      timestamp = spec.now})
    return reply('kept')
  end
  redis.call('HDEL', WAITS, spec.step)
  redis.call('ZREM', DUE, parked.due_member or '')
  if sig.id ~= '' then
    redis.call('HSET', SIGNALS, 'id:' .. sig.id, sig.name)
  end
  if status == STATUS.waiting then
    status = STATUS.running
    redis.call('HSET', META, 'status', status)
  end
  return nil
end

-- A run-time handoff counts against max_handoffs: past it, the step fails (a loop?).
local function outcome_of_handoff()
  if spec.handoff_id == '' then
    return spec.outcome, spec.error
  end
  local n = redis.call('HINCRBY', META, 'handoffs', 1)
  if n > tonumber(spec.max_handoffs) then
    return 'fail', 'max_handoffs (' .. spec.max_handoffs .. ') reached: handoff from ' ..
      spec.step .. ' refused; is it a loop?'
  end
  return spec.outcome, spec.error
end

-- The step's result and everything written with it, each item noted with the version
-- that wrote it (written) and named for watchers (changed).
local function write(version, outcome, err)
  local ok = outcome ~= 'fail'
  local written, changed = {'r:' .. spec.step, version}, {'result:' .. spec.step}
  local function wrote(item, change)
    table.insert(written, item)
    table.insert(written, version)
    if change then
      table.insert(changed, change)
    end
  end
  local result = ARGV[3]
  if not ok and err ~= spec.error then
    local r = cjson.decode(result)
    r.status, r.error, r.result = STEP.failed, err, cjson.null
    result = cjson.encode(r)
  end
  redis.call('HSET', RESULTS, spec.step, result)
  if spec.consume and spec.consume ~= '' then  -- a wait used up the signal kept for it
    redis.call('HDEL', SIGNALS, 'name:' .. spec.consume, 'meta:' .. spec.consume)
  end
  if spec.output_key ~= '' and ok then
    redis.call('HSET', DATA, spec.output_key, ARGV[2])
    wrote('d:' .. spec.output_key, 'data:' .. spec.output_key)
  end
  if spec.handoff_id ~= '' and ok then
    redis.call('HSET', DYNAMIC, spec.handoff_id, ARGV[5])
    redis.call('HINCRBY', META, 'total_steps', 1)
    wrote('h:' .. spec.handoff_id, 'step:' .. spec.handoff_id)
  end
  if (spec.add_steps or 0) ~= 0 and ok then
    -- A branch took its way: progress counts the steps on it (restore takes them back).
    redis.call('HINCRBY', META, 'total_steps', spec.add_steps)
    wrote('k:' .. spec.step .. ':' .. spec.add_steps)
  end
  for id, skipped in pairs(spec.skipped or {}) do  -- a branch's steps on the ways not taken
    redis.call('HSET', RESULTS, id, skipped)
    wrote('r:' .. id)
  end
  for key, value in pairs(spec.outputs or {}) do  -- a sub-workflow's outputs, a key each
    if ok then
      redis.call('HSET', DATA, key, value)
      wrote('d:' .. key, 'data:' .. key)
    end
  end
  if spec.advance and ok then
    redis.call('HINCRBY', META, 'current_step', 1)
    wrote('b:' .. spec.node)
  end
  redis.call('HSET', VERSIONS, unpack(written))
  return changed
end

-- The step is no longer running: its lease, its message and its place in RUNNING go.
local function release_step()
  redis.call('HDEL', RUNNING, spec.step)
  if spec.owner ~= '' then
    redis.call('HSET', STEPS, 'owner:' .. spec.step, spec.owner)
  end
  redis.call('HDEL', STEPS, 'lease:' .. spec.step)
  if spec.task_id ~= '' then
    redis.call('SREM', TASKS, spec.task_id)
  end
  redis.call('HSET', META, 'updated_at', spec.now)
end

-- The workflow's status after the commit: compensating (failed; compensations run, then
-- the state is restored), completed, or as it was.
local function finish(outcome, err, version)
  if outcome == 'fail' then
    redis.call('HSET', META, 'status', STATUS.compensating, 'error', err, 'failed_step', spec.step)
    return STATUS.compensating
  elseif outcome == 'complete' then
    redis.call('HSET', META, 'status', STATUS.completed)
    history({event = EVENT.workflow_completed, status = STATUS.completed, step = spec.step,
      version = version, timestamp = spec.now})
    redis.call('DEL', RUNNING)
    active(false)
    ended(STATUS.completed, spec)
    return STATUS.completed
  end
  return status
end

-- What goes next, while the workflow runs (a paused one holds it back for resume).
-- Returns the aggregate sent (its id and message) and the status after.
local function send_next(outcome, final)
  local joined = false
  if spec.join and outcome ~= 'fail' then
    joined = redis.call('HINCRBY', STEPS, 'joined:' .. spec.join.group, 1) == spec.join.total
  end
  local aggregate, message = '', ''
  if final == STATUS.running then
    send(spec)
    if joined then
      aggregate, message = send_aggregate(spec.join.group)
    end
    active(true)
    final = settle(spec, true) or final
  elseif final == STATUS.paused and (#(spec.track or {}) > 0 or joined) then
    redis.call('HSETNX', META, 'paused_at', spec.step)
  end
  return aggregate, message, final
end

if not status then
  return {'missing', 0, '', '', ''}
end
-- This execution's own commit, replayed after a lost reply: report it as done, whatever
-- the status that commit left (it may have completed or failed the workflow).
local exists = redis.call('HEXISTS', RESULTS, spec.step) == 1
if exists and spec.owner ~= '' and redis.call('HGET', STEPS, 'owner:' .. spec.step) == spec.owner then
  return {'committed', version_now(), status, '', ''}
end
local refused = refusal(exists)
if refused then
  return refused
end
if spec.signal then
  local unparked = wake_wait(spec.signal)
  if unparked then
    return unparked
  end
end
local outcome, err = outcome_of_handoff()
local version = redis.call('HINCRBY', META, 'version', 1)
observe_step(spec.agent_id, spec.task_type, outcome == 'fail' and STEP.failed or spec.status,
  spec.seconds)
local changed = write(version, outcome, err)
release_step()
local entry = cjson.decode(ARGV[4])
entry.version, entry.changed = version, changed
if outcome == 'fail' then
  entry.event, entry.status, entry.error = EVENT.step_failed, STEP.failed, err
end
history(entry)
local final = finish(outcome, err, version)
local aggregate, message
aggregate, message, final = send_next(outcome, final)
local committed = {event = EVENT.committed, step = spec.step, version = version, status = final,
  result = entry.status, error = entry.error}
if final ~= status then
  publish_status(spec, committed)
else
  publish(spec.channel, committed)
end
return {'committed', version, final, aggregate, message}
