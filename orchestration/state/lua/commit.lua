-- Commit one step's handoff atomically: its TaskResult, its output under output_key,
-- a versioned history entry (a checkpoint), the tracked task ids and, when it ends the
-- workflow, its final status. Compare-and-set: nothing is written unless the workflow
-- is running (or paused) in the same run and the step has not been committed already;
-- a refused commit is itself recorded in the history.
-- What goes next is sent with it (see send() in _lib.lua) while the workflow runs: the
-- next step or group, or, when spec.join names this step's group, the group's aggregate
-- once this was the last of its branches to end. Returns {state, version, status,
-- the id and message of the aggregate it sent, or '', ''} (scripts.CommitReply).
-- With spec.signal {name, id, by, timer} it commits a parked wait (from a signal or its
-- timer), allowed while the workflow is waiting; a signal for a wait not parked yet is
-- kept for it instead ('kept'), and a signal_id seen before changes nothing.
-- ARGV: spec {step, node, output_key, advance, outcome, now, error, retention, run,
--             agent_id, task_type, status, seconds (for the metrics),
--             task_id, track, sends, ops, join {group, total}, arm, join_track, joins,
--             handoff_id, max_handoffs, add_steps, skipped {step: result JSON}, channel},
--       output_json, result_json, history_json, handoff_json, outgoing payloads...
local spec = cjson.decode(ARGV[1])
local status = redis.call('HGET', META, 'status')
if not status then
  return {'missing', 0, '', '', ''}
end
local function refuse(state)
  redis.call('HDEL', RUNNING, spec.step)
  if spec.task_id ~= '' then
    redis.call('SREM', TASKS, spec.task_id)
  end
  history({event = EVENT.commit_refused, step = spec.step, status = state, timestamp = spec.now,
    error = 'workflow is ' .. status .. ' (' .. state .. ')'})
  return {state, tonumber(redis.call('HGET', META, 'version')), status, '', ''}
end
-- This execution's own commit, replayed after a lost reply: report it as done, whatever
-- the status that commit left (it may have completed or failed the workflow).
local exists = redis.call('HEXISTS', RESULTS, spec.step) == 1
if exists and spec.owner ~= '' and redis.call('HGET', STEPS, 'owner:' .. spec.step) == spec.owner then
  return {'committed', tonumber(redis.call('HGET', META, 'version')), status, '', ''}
end
local sig = spec.signal
if sig and sig.id ~= '' and redis.call('HEXISTS', SIGNALS, 'id:' .. sig.id) == 1 then
  -- The same signal_id again: applied once already (or kept), nothing changes.
  return {'duplicate_signal', tonumber(redis.call('HGET', META, 'version')), status, '', ''}
end
if status ~= 'running' and status ~= 'paused' and not (sig and status == 'waiting') then
  if sig then
    return {'not_running', tonumber(redis.call('HGET', META, 'version')), status, '', ''}
  end
  return refuse('not_running')
end
if tonumber(redis.call('HGET', META, 'run')) ~= spec.run then
  return refuse('stale')
end
if exists then
  return refuse('duplicate')
end
if sig then
  -- A signal (or a timer) for a wait step: committed only if the wait is parked there.
  local raw = redis.call('HGET', WAITS, spec.step)
  local parked = raw and cjson.decode(raw)
  if not parked or parked.run ~= spec.run then
    if sig.timer then
      return {'not_waiting', tonumber(redis.call('HGET', META, 'version')), status, '', ''}
    end
    -- Not reached yet (or its message is on its way): kept, for the wait to find.
    if redis.call('HEXISTS', SIGNALS, 'name:' .. sig.name) == 1 then
      return {'already_signalled', tonumber(redis.call('HGET', META, 'version')), status, '', ''}
    end
    redis.call('HSET', SIGNALS, 'name:' .. sig.name, ARGV[2],
      'meta:' .. sig.name, cjson.encode({id = sig.id, by = sig.by, at = spec.now}))
    if sig.id ~= '' then
      redis.call('HSET', SIGNALS, 'id:' .. sig.id, sig.name)
    end
    history({event = EVENT.signal_kept, step = spec.step, status = sig.name, by = sig.by,
      timestamp = spec.now})
    return {'kept', tonumber(redis.call('HGET', META, 'version')), status, '', ''}
  end
  redis.call('HDEL', WAITS, spec.step)
  redis.call('ZREM', DUE, parked.due_member or '')
  if sig.id ~= '' then
    redis.call('HSET', SIGNALS, 'id:' .. sig.id, sig.name)
  end
  if status == 'waiting' then
    status = 'running'
    redis.call('HSET', META, 'status', status)
  end
end

local outcome, err = spec.outcome, spec.error
if spec.handoff_id ~= '' then
  local n = redis.call('HINCRBY', META, 'handoffs', 1)
  if n > tonumber(spec.max_handoffs) then
    outcome = 'fail'
    err = 'max_handoffs (' .. spec.max_handoffs .. ') reached: handoff from ' .. spec.step ..
      ' refused; is it a loop?'
  end
end

local version = redis.call('HINCRBY', META, 'version', 1)
observe_step(spec.agent_id, spec.task_type, outcome == 'fail' and 'failed' or spec.status,
  spec.seconds)
local changed = {'result:' .. spec.step}
local result = ARGV[3]
if outcome == 'fail' and err ~= spec.error then
  local r = cjson.decode(result)
  r.status, r.error, r.result = 'failed', err, cjson.null
  result = cjson.encode(r)
end
redis.call('HSET', RESULTS, spec.step, result)
if spec.consume and spec.consume ~= '' then
  redis.call('HDEL', SIGNALS, 'name:' .. spec.consume, 'meta:' .. spec.consume)
end
local written = {'r:' .. spec.step, version}  -- the version that wrote each item
if spec.output_key ~= '' and outcome ~= 'fail' then
  redis.call('HSET', DATA, spec.output_key, ARGV[2])
  table.insert(written, 'd:' .. spec.output_key)
  table.insert(written, version)
  table.insert(changed, 'data:' .. spec.output_key)
end
if spec.handoff_id ~= '' and outcome ~= 'fail' then
  redis.call('HSET', DYNAMIC, spec.handoff_id, ARGV[5])
  table.insert(written, 'h:' .. spec.handoff_id)
  table.insert(written, version)
  redis.call('HINCRBY', META, 'total_steps', 1)
  table.insert(changed, 'step:' .. spec.handoff_id)
end
if (spec.add_steps or 0) ~= 0 and outcome ~= 'fail' then
  -- A branch took its way: progress counts the steps on it (restore takes them back).
  redis.call('HINCRBY', META, 'total_steps', spec.add_steps)
  table.insert(written, 'k:' .. spec.step .. ':' .. spec.add_steps)
  table.insert(written, version)
end
for id, skipped in pairs(spec.skipped or {}) do  -- a branch's steps on the ways not taken
  redis.call('HSET', RESULTS, id, skipped)
  table.insert(written, 'r:' .. id)
  table.insert(written, version)
end
for key, value in pairs(spec.outputs or {}) do  -- a sub-workflow's outputs, a key each
  if outcome ~= 'fail' then
    redis.call('HSET', DATA, key, value)
    table.insert(written, 'd:' .. key)
    table.insert(written, version)
    table.insert(changed, 'data:' .. key)
  end
end
if spec.advance and outcome ~= 'fail' then
  redis.call('HINCRBY', META, 'current_step', 1)
  table.insert(written, 'b:' .. spec.node)
  table.insert(written, version)
end
redis.call('HSET', VERSIONS, unpack(written))
redis.call('HDEL', RUNNING, spec.step)
if spec.owner ~= '' then
  redis.call('HSET', STEPS, 'owner:' .. spec.step, spec.owner)
end
redis.call('HDEL', STEPS, 'lease:' .. spec.step)
if spec.task_id ~= '' then
  redis.call('SREM', TASKS, spec.task_id)
end
redis.call('HSET', META, 'updated_at', spec.now)
local entry = cjson.decode(ARGV[4])
entry.version, entry.changed = version, changed
if outcome == 'fail' then
  entry.event, entry.status, entry.error = EVENT.step_failed, 'failed', err
end
history(entry)

local final = status
if outcome == 'fail' then
  -- Not terminal yet: compensations (if any) run, then the state is restored.
  final = 'compensating'
  redis.call('HSET', META, 'status', final, 'error', err, 'failed_step', spec.step)
elseif outcome == 'complete' then
  final = 'completed'
  count_workflow(final)
  redis.call('HSET', META, 'status', final, 'finished_at', spec.now)
  history({event = EVENT.workflow_completed, status = final, step = spec.step, version = version,
    timestamp = spec.now})
  redis.call('DEL', RUNNING)
  active(false)
  expire_all(spec.retention)
  wake_parent()
end
local joined = false
if spec.join and outcome ~= 'fail' then
  joined = redis.call('HINCRBY', STEPS, 'joined:' .. spec.join.group, 1) == spec.join.total
end
local aggregate, message = '', ''
if final == 'running' then
  send(spec)
  if joined then
    aggregate, message = send_aggregate(spec.join.group)
  end
  active(true)
  final = settle(spec, true) or final
elseif final == 'paused' and (#(spec.track or {}) > 0 or joined) then
  -- What would go next is held back: resume sends it.
  redis.call('HSETNX', META, 'paused_at', spec.step)
end
local committed = {event = EVENT.committed, step = spec.step, version = version, status = final,
  result = entry.status, error = entry.error}
if final ~= status then
  publish_status(spec, committed)
else
  publish(spec.channel, committed)
end
return {'committed', version, final, aggregate, message}
