"""Names that Python and the Lua scripts share: history events, metric counters, buckets.

Defined once, here. The scripts get them as Lua tables (:func:`lua_prelude`, prepended
to every script when it is registered), so neither side spells a name the other does
not know: a script that asks for a name missing here fails loudly instead of writing a
stray string.
"""

from __future__ import annotations

from enum import StrEnum

from orchestration.model.records import TaskStatus, WorkflowStatus


class Event(StrEnum):
    """What a history entry (or a message on a workflow's event channel) records."""

    # the workflow's lifecycle (history)
    WORKFLOW_CREATED = "workflow_created"
    WORKFLOW_STARTED = "workflow_started"
    WORKFLOW_PAUSED = "workflow_paused"
    WORKFLOW_RESUMED = "workflow_resumed"
    WORKFLOW_CANCELLED = "workflow_cancelled"
    WORKFLOW_RETRIED = "workflow_retried"
    WORKFLOW_COMPLETED = "workflow_completed"
    WORKFLOW_REAPED = "workflow_reaped"
    START_FAILED = "start_failed"
    ROLLED_BACK = "rolled_back"
    STATE_RESTORED = "state_restored"
    # steps (history)
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    STEP_RETRY = "step_retry"
    COMMIT_REFUSED = "commit_refused"
    DUPLICATE_DROPPED = "duplicate_dropped"
    REDELIVERY_DEFERRED = "redelivery_deferred"
    ATTEMPT_LOST = "attempt_lost"
    REAPER_REDISPATCHED = "reaper_redispatched"
    # waits (history)
    WAIT_PARKED = "wait_parked"
    SIGNAL_KEPT = "signal_kept"
    # maps (history, and the event channels)
    MAP_STARTED = "map_started"
    MAP_FAILED_ITEMS = "map_failed_items"
    # the saga (history)
    COMPENSATION_STARTED = "compensation_started"
    STEP_COMPENSATED = "step_compensated"
    COMPENSATION_FAILED = "compensation_failed"
    # messages on the event channels only
    STEP_STARTED = "step_started"
    COMMITTED = "committed"
    STATUS = "status"
    # written by a running step (``step.emit``, ``step.progress``): the stream only
    EMITTED = "emitted"
    PROGRESS = "progress"
    MAP_PROGRESS = "map_progress"  # a map's batch committed: its counts


#: Where a run (re)starts: the attempts and retries the dashboard shows count from here.
RUN_STARTS = (Event.WORKFLOW_STARTED, Event.WORKFLOW_RETRIED, Event.WORKFLOW_RESUMED)


class Metric(StrEnum):
    """Fields of the metrics hash (``keys.metrics_key``), each followed by ``|<labels>``.

    ``workflows_total|<status>``; ``steps_total|<agent>|<task>|<status>``;
    ``step_seconds_sum|<agent>|<task>``; ``step_seconds_in|<agent>|<task>|<le>``: one
    bucket per observation (the first bound that holds it, or ``+Inf``); ``/metrics``
    sums them into Prometheus' cumulative buckets and count.
    """

    WORKFLOWS_TOTAL = "workflows_total"
    STEPS_TOTAL = "steps_total"
    STEP_SECONDS_SUM = "step_seconds_sum"
    STEP_SECONDS_IN = "step_seconds_in"
    #: ``writes_not_replicated|<script>``: writes fewer replicas acknowledged than asked
    WRITES_NOT_REPLICATED = "writes_not_replicated"


#: Events kept per workflow stream (approximately: Redis trims whole nodes); a reader that
#: falls further behind than this misses the oldest.
STREAM_MAXLEN = 10_000

#: Upper bounds (seconds) of the step duration histogram's buckets.
STEP_BUCKETS: tuple[float, ...] = (0.05, 0.25, 1, 5, 30, 120, 600)


def _lua_table(name: str, values: dict[str, str]) -> str:
    items = ", ".join(f"{key} = '{value}'" for key, value in values.items())
    return (
        f"local {name} = setmetatable({{{items}}}, "
        f"{{__index = function(_, k) error('no {name.lower()} named ' .. tostring(k)) end}})"
    )


def lua_prelude() -> str:
    """The Lua tables ``EVENT``, ``METRIC``, ``STATUS`` (a workflow's), ``STEP`` (a step's)
    and ``BUCKETS`` (and ``STREAM_MAXLEN``) that every script starts with."""
    buckets = ", ".join(repr(b) for b in STEP_BUCKETS)
    return "\n".join(
        [
            "-- Generated from orchestration/model/names.py: the names Python and Lua share.",
            _lua_table("EVENT", {e.value: e.value for e in Event}),
            _lua_table("METRIC", {m.value: m.value for m in Metric}),
            _lua_table("STATUS", {s.value: s.value for s in WorkflowStatus}),
            _lua_table("STEP", {s.value: s.value for s in TaskStatus}),
            f"local BUCKETS = {{{buckets}}}",
            f"local STREAM_MAXLEN = {STREAM_MAXLEN}",
        ]
    )


# --------------------------------------------------------------------------- queues and task names

#: The engine's own name: its tasks are ``baton.<name>`` on the control queue, and a
#: group's aggregate result is recorded under it as the agent id.
ENGINE = "baton"
AGGREGATOR_AGENT = ENGINE
CONTROL_QUEUE = f"{ENGINE}.control"
AGGREGATE_TASK = f"{ENGINE}.aggregate"
FINISH_FAILURE_TASK = f"{ENGINE}.finish_failure"
MAP_TASK = f"{ENGINE}.map"  # starts a map: reads its list, sends its first batches
BRANCH_TASK = f"{ENGINE}.branch"  # a branch: reads its value, takes one way


def agent_queue(agent_id: str) -> str:
    """The queue an agent's tasks go to: one per agent, so workers scale per agent (the
    engine's own steps, waits, go to the control queue)."""
    return CONTROL_QUEUE if agent_id == ENGINE else f"agent.{agent_id}"


def agents_of(queues: list[str]) -> list[str]:
    """The agents whose queues these are (``agent.<id>``; the control queue is none)."""
    return [q.removeprefix("agent.") for q in queues if q.startswith("agent.")]
