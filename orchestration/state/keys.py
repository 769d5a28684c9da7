"""Every Redis key Baton writes, in one place; the fields of its hashes are named in
``fields.py`` beside it (each hash's docstring here lists them).

A workflow's keys share the hash tag ``{<workflow_id>}``, so the scripts that touch
several of them hash to one slot; only ``create`` also touches the index of workflows,
which a Redis Cluster deployment would have to move into that script's caller.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkflowKeys:
    prefix: str
    workflow_id: str

    @property
    def _base(self) -> str:
        return f"{self.prefix}:wf:{{{self.workflow_id}}}"

    @property
    def meta(self) -> str:
        """Hash, ``fields.MetaField``: workflow_id, name, created_at; status, run, version,
        updated_at, finished_at, deadline_at; current_step, total_steps, handoffs;
        paused_at, reaps; error, failed_step, compensation; parent, parent_step,
        parent_run, parent_due (a sub-workflow's)."""
        return self._base

    @property
    def plan(self) -> str:
        """String: the checked plan (JSON); written once."""
        return f"{self._base}:plan"

    @property
    def data(self) -> str:
        """Hash: shared_data, one JSON value per output_key."""
        return f"{self._base}:data"

    @property
    def results(self) -> str:
        """Hash: step_id -> TaskResult JSON."""
        return f"{self._base}:results"

    @property
    def history(self) -> str:
        """List: execution history entries (JSON)."""
        return f"{self._base}:history"

    @property
    def running(self) -> str:
        """Hash: step_id -> RunningStep JSON, for steps an agent is working on."""
        return f"{self._base}:running"

    @property
    def versions(self) -> str:
        """Hash, ``fields.VersionItem``: the version that wrote each live item: ``d:<key>``,
        ``r:<step>``, ``h:<inserted step>``, ``b:<step>`` (a step that advanced progress),
        ``k:<step>:<n>`` (a branch's way, n steps), ``m:<map>`` (a map's items)."""
        return f"{self._base}:versions"

    @property
    def archive(self) -> str:
        """Hash: values superseded by a restore, ``<item>@<written>-<removed>`` -> JSON
        (``<item>`` a ``fields.VersionItem`` field; live from version written to removed)."""
        return f"{self._base}:archive"

    @property
    def tasks(self) -> str:
        """Set: Celery task ids dispatched and not yet committed (revoked on cancel)."""
        return f"{self._base}:tasks"

    @property
    def dynamic(self) -> str:
        """Hash: steps inserted at run time by handoffs, step_id -> PlannedTask JSON."""
        return f"{self._base}:dynamic"

    @property
    def steps(self) -> str:
        """Hash, ``fields.StepField``: per-step bookkeeping, ``<kind>:<step>``: ``lease:``
        (``fields.LeaseRecord``: owner, worker, until), ``attempts:``, ``deferred:``,
        ``owner:`` (the execution that committed it), ``emitted:``/``progress:`` (its
        latest); and a group's (or map's) ``joined:<group>``, ``join:<group>``."""
        return f"{self._base}:steps"

    @property
    def events(self) -> str:
        """Pub/sub channel: one message per change, a step starting included (for ``watch``
        and the dashboard)."""
        return f"{self._base}:events"

    @property
    def stream(self) -> str:
        """Stream: the workflow's events in order (what ``events`` publishes, and what its
        steps emit), bounded, expiring with the workflow; read by ``orchestrator.stream``.
        Each entry has one field, ``fields.STREAM_FIELD``: the event's JSON."""
        return f"{self._base}:stream"

    @property
    def throttled(self) -> str:
        """Hash: step_id -> why and until when a step waits for its rate or concurrency
        limit (``lua/limit.lua`` writes it, admission removes it)."""
        return f"{self._base}:throttled"

    @property
    def waits(self) -> str:
        """Hash: step_id -> the wait parked there, JSON (``fields.WaitRecord``: its signal's
        name, run, since, due_ms, due_member)."""
        return f"{self._base}:waits"

    @property
    def signals(self) -> str:
        """Hash, ``fields.SignalField``: ``name:<n>`` -> a signal's payload kept until its
        wait is reached, ``meta:<n>`` -> who sent it and when, ``id:<signal_id>`` -> the
        name it was for."""
        return f"{self._base}:signals"

    @property
    def maps(self) -> str:
        """Hash, ``fields.MapField``: every map's items and results, by ``<map step>@<epoch>:``
        (``fields.map_base``): ``n`` (items), ``i:<batch>`` (a batch's items, a JSON list),
        ``r:<index>`` (an item's result), ``ok``/``failed`` (counts), ``b:<batch>`` (the
        run that committed it); a run's line of batches: ``todo:<run>``,
        ``t:<run>:<position>``, ``cursor:<run>``, ``requeue:<run>``, ``inflight:<run>``,
        ``unclaimed:<run>``, ``joined:<run>``, and ``claim:<task id>``; and
        ``epoch:<map step>``, bumped when a restore takes the map back, so that it starts
        over."""
        return f"{self._base}:maps"

    @property
    def statuses(self) -> str:
        """Pub/sub channel: one message per change of the workflow's status (wakes ``wait``,
        which has no use for the rest)."""
        return f"{self._base}:status"

    @staticmethod
    def workflow_of(meta: str) -> str:
        """The workflow id of a meta key (a member of ``active_key``)."""
        return meta.split("{", 1)[1].rsplit("}", 1)[0]

    def all(self) -> list[str]:
        """Every key of the workflow, in the order the Lua scripts expect (``_lib.lua``)."""
        return [
            self.meta,
            self.plan,
            self.data,
            self.results,
            self.history,
            self.running,
            self.versions,
            self.archive,
            self.tasks,
            self.dynamic,
            self.steps,
            self.stream,
            self.throttled,
            self.waits,
            self.signals,
            self.maps,
        ]


def index_key(prefix: str) -> str:
    """Sorted set of workflow ids by creation time."""
    return f"{prefix}:workflows"


def active_key(prefix: str) -> str:
    """Sorted set: meta keys of running workflows by their last progress (epoch seconds),
    which the reaper scans for stalled ones."""
    return f"{prefix}:active"


def due_key(prefix: str) -> str:
    """Sorted set: ``<workflow_id>|<step_id>|<run>`` of every parked wait with a time, by
    when it is due (epoch ms); the workers' timer sweep fires what is due."""
    return f"{prefix}:due"


def due_member(workflow_id: str, step_id: str, run: int) -> str:
    """A parked wait's member of the due index."""
    return f"{workflow_id}|{step_id}|{run}"


def parse_due_member(member: str) -> tuple[str, str, int]:
    """(workflow_id, step_id, run) of a member of the due index."""
    workflow_id, step_id, run = member.split("|")
    return workflow_id, step_id, int(run)


def reaper_lock_key(prefix: str) -> str:
    """String: the worker sweeping for stalled workflows now (its random owner id), with
    a TTL of two sweep intervals; a worker takes it, or renews it if it is its own."""
    return f"{prefix}:reaper"


def definitions_key(prefix: str) -> str:
    """Hash: workflow name -> a registered definition (JSON), for sub-workflow steps."""
    return f"{prefix}:definitions"


def metrics_key(prefix: str) -> str:
    """Hash of counters for ``/metrics``; its fields are named in ``names.Metric``."""
    return f"{prefix}:metrics"


# --------------------------------------------------------------------------- limits
# A budget is one limit (``orchestration/model/limits.py``) and one key of it (what its
# ``limit_key`` gave, "" without one); ``state/limiter.py`` and ``lua/limit.lua`` keep them.


@dataclass(frozen=True)
class BudgetKeys:
    """The keys of one budget, under ``<prefix>:limit:<name>:<key>``. Not a workflow's:
    every workflow (and every worker) draws on the same budget."""

    prefix: str
    name: str
    key: str

    @property
    def _base(self) -> str:
        return f"{self.prefix}:limit:{self.name}:{self.key}"

    @property
    def rate(self) -> str:
        """Hash, field ``tat`` (``fields.RateField``): the rate's theoretical arrival time
        (GCRA, epoch ms), the next free turn. Expires a minute after the last turn it gave."""
        return f"{self._base}:rate"

    @property
    def slots(self) -> str:
        """Sorted set: the concurrency slots held, owner -> expiry (epoch ms), renewed with
        the holder's lease, so a dead worker's slot comes back by itself. An owner is
        ``<workflow_id>:<step_id>:<run>`` (a map's item: ``<workflow_id>:<map>[<index>]:<run>``)."""
        return f"{self._base}:slots"

    @property
    def waiting(self) -> str:
        """Sorted set: the owners waiting for a slot -> when they were first refused (epoch
        ms): the line, oldest first; a freed slot goes to the first."""
        return f"{self._base}:waiting"

    @property
    def polled(self) -> str:
        """Sorted set: each waiting owner -> when it last asked (epoch ms); one that has not
        asked for 30 s (cancelled, its worker gone) gives up its place in ``waiting``."""
        return f"{self._base}:polled"

    @property
    def reserved(self) -> str:
        """Sorted set: owners holding a rate turn further off than a worker waits out ->
        that turn (epoch ms); its step comes back for it."""
        return f"{self._base}:reserved"

    def all(self) -> list[str]:
        """The budget's keys in the order ``lua/limit.lua`` expects (five per limit)."""
        return [self.rate, self.slots, self.waiting, self.polled, self.reserved]


def limit_overrides_key(prefix: str) -> str:
    """Hash: limit name -> JSON of the values ``baton limits set`` gave it (``rate``,
    ``concurrency``, and ``rate_ms``: the spacing of its turns), for every worker."""
    return f"{prefix}:limits"


def limit_budgets_key(prefix: str) -> str:
    """Set: every budget ever used, ``<name>\\t<key>`` (what ``baton limits`` lists)."""
    return f"{prefix}:limit-budgets"


def limit_freed_channel(prefix: str) -> str:
    """Pub/sub channel: when a step releases its concurrency slots, the JSON list of the
    waiting owners the freed slots are for (the first in each line); each worker process
    listens and wakes those of its own steps at once (``state/limiter.py`` ``Wakeups``)."""
    return f"{prefix}:limit-freed"
