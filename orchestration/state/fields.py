"""The fields of the hashes ``keys.py`` names, each named and documented once.

Python reads and writes a field only by these names. The Lua scripts (``state/lua/``)
spell the same strings as literals, their headers pointing here; ``tests/test_scripts.py``
holds the two together: after a run of the scripts, every field of a workflow's meta,
steps, signals, versions and maps hashes must be one named here.

A parameterised field is ``<kind>:<name>``: its kind is a member of its hash's enum below,
``Kind.X.of(name)`` builds it and ``Kind.parse(field)`` reads it back. The hashes keyed by
a step id, an output key or a limit name (results, data, running, dynamic, waits,
throttled, definitions, limit overrides) have no fields of their own to name; the
metrics hash's are ``names.Metric``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Self

from orchestration.model.names import Event


class MetaField(StrEnum):
    """The fields of a workflow's meta hash (``WorkflowKeys.meta``), all plain."""

    # written once, by create.lua
    WORKFLOW_ID = "workflow_id"
    NAME = "name"  # the definition's name
    CREATED_AT = "created_at"  # ISO time
    # its status and run
    STATUS = "status"  # a WorkflowStatus
    RUN = "run"  # 1, bumped by retry, resume and restore: a message of another run is stale
    VERSION = "version"  # the last checkpoint: every commit and every restore adds one
    UPDATED_AT = "updated_at"  # ISO time of the last commit or change of status
    FINISHED_AT = "finished_at"  # ISO time it ended (completed, failed or cancelled)
    DEADLINE_AT = "deadline_at"  # epoch seconds; the reaper fails it once past
    # progress (what a restore takes back, the versions hash's b: and k: items say)
    CURRENT_STEP = "current_step"  # top-level steps committed
    TOTAL_STEPS = "total_steps"  # the plan's, plus inserted steps and the branches taken
    HANDOFFS = "handoffs"  # run-time handoffs taken, against max_handoffs
    # held and watched
    PAUSED_AT = "paused_at"  # where a pause stopped something (a step, a map, "restored")
    REAPS = "reaps"  # re-dispatches of the reaper since the last restore
    # a failure and its saga
    ERROR = "error"  # why it failed (or was cancelled, reaped)
    FAILED_STEP = "failed_step"  # the step that failed it
    COMPENSATION = "compensation"  # CompensationOutcome JSON: what its saga did
    # a sub-workflow: the parent's step it runs for, which its end wakes
    PARENT = "parent"  # the parent's workflow id
    PARENT_STEP = "parent_step"  # the parent's step
    PARENT_RUN = "parent_run"  # the parent's run that started (or retried) it
    PARENT_DUE = "parent_due"  # that step's member of the due index (keys.due_member)


class _Kind(StrEnum):
    """The kinds of ``<kind>:<name>`` fields of one hash."""

    def of(self, *names: object) -> str:
        """The field of this kind for ``names`` (joined by ``:``)."""
        return ":".join([self.value, *map(str, names)])

    @classmethod
    def parse(cls, field: str) -> tuple[Self, str] | None:
        """(kind, name) of a field of this hash; None if its kind is not one of these."""
        kind, sep, name = field.partition(":")
        return (cls(kind), name) if sep and kind in cls._value2member_map_ else None


class StepField(_Kind):
    """The fields of a workflow's steps hash (``WorkflowKeys.steps``): ``<kind>:<step>``.
    A map's batch is the step ``<map>#<batch>``."""

    LEASE = "lease"  # LeaseRecord JSON: the execution running the step now
    ATTEMPTS = "attempts"  # attempts begun (a lease released uncounted takes one back)
    DEFERRED = "deferred"  # deliveries deferred while another execution held the lease
    OWNER = "owner"  # the execution that committed it (a replayed commit is its own)
    JOINED = "joined"  # ``joined:<group or map>``: its branches (a map: batches) ended
    JOIN = "join"  # ``join:<group or map>``: its aggregate, armed: JSON {ids, messages}
    EMITTED = Event.EMITTED.value  # the step's latest ``step.emit`` message (JSON)
    PROGRESS = Event.PROGRESS.value  # the step's latest ``step.progress`` message (JSON)


def batch_step(map_id: str, batch: int) -> str:
    """The step a map's batch runs as (its lease, its place in the running hash)."""
    return f"{map_id}#{batch}"


class LeaseRecord(StrEnum):
    """The keys of a lease's JSON (``StepField.LEASE``)."""

    OWNER = "owner"  # the execution holding it
    WORKER = "worker"  # its worker's name
    UNTIL = "until"  # epoch ms it lapses at unless renewed


class SignalField(_Kind):
    """The fields of a workflow's signals hash (``WorkflowKeys.signals``)."""

    NAME = "name"  # ``name:<signal>``: the payload (JSON) kept for a wait not reached yet
    META = "meta"  # ``meta:<signal>``: who sent it and when, JSON {id, by, at}
    ID = "id"  # ``id:<signal_id>``: the signal's name; the same id again changes nothing


class WaitRecord(StrEnum):
    """The keys of a parked wait's JSON (``WorkflowKeys.waits``, one per step)."""

    NAME = "name"  # the signal it waits for ("" for a sleep)
    RUN = "run"  # the run it was parked in
    SINCE = "since"  # ISO time it was parked
    DUE_MS = "due_ms"  # its timer, epoch ms (0: none)
    DUE_MEMBER = "due_member"  # its member of the due index (keys.due_member)


class VersionItem(_Kind):
    """The fields of a workflow's versions hash (``WorkflowKeys.versions``): ``<kind>:<name>``
    -> the version that wrote the item. A restore to an earlier version undoes each item
    written after it; a value it removes goes to the archive hash under
    ``<item>@<written>-<removed>`` (the versions it was live for)."""

    DATA = "d"  # ``d:<output key>``: a value of shared_data
    RESULT = "r"  # ``r:<step>``: a step's result
    HANDOFF = "h"  # ``h:<inserted step>``: a step a handoff inserted (one of total_steps)
    ADVANCED = "b"  # ``b:<step>``: a top-level step that counted in current_step
    BRANCHED = "k"  # ``k:<step>:<n>``: a branch's way that added n to total_steps
    MAP = "m"  # ``m:<map>``: a map whose items were written (taken back: a new epoch)


class MapField(_Kind):
    """The fields of a workflow's maps hash (``WorkflowKeys.maps``). A map's own are under
    ``map_base(<map>, <epoch>)``: ``base + MapField.X.of(...)``, or ``MapField.X.at(base,
    ...)``; ``<run>`` is the workflow's run. Only ``epoch:<map>`` is outside every base."""

    EPOCH = "epoch"  # ``epoch:<map>``: bumped by a restore to before the map began
    # the items and their results (``state/maps.py``)
    COUNT = "n"  # how many items (written by its start, once per epoch)
    ITEMS = "i"  # ``i:<batch>``: a batch's items, one JSON list
    RESULT = "r"  # ``r:<index>``: an item's result (``maps.ItemResult.encode``)
    OK = "ok"  # items completed
    FAILED = "failed"  # items failed
    COMMITTED = "b"  # ``b:<batch>``: the run that committed the batch
    # the line of batches of a run (mapstart.lua, mapbegin.lua, mapcommit.lua)
    TODO = "todo"  # ``todo:<run>``: how many batches the run sends
    TURN = "t"  # ``t:<run>:<position>``: the batch at that place in the run's line
    CURSOR = "cursor"  # ``cursor:<run>``: the places in line taken so far
    REQUEUE = "requeue"  # ``requeue:<run>``: places taken and given back (JSON list)
    INFLIGHT = "inflight"  # ``inflight:<run>``: the run's messages not yet ended
    UNCLAIMED = "unclaimed"  # ``unclaimed:<run>``: messages sent that took no batch yet
    CLAIM = "claim"  # ``claim:<task id>``: the place a message took, "done" once it ended
    JOINED = "joined"  # ``joined:<run>``: batches the run committed

    def at(self, base: str, *names: object) -> str:
        """The field of this kind of the map whose base is ``base``."""
        return base + (self.of(*names) if names else self.value)

    def each(self, base: str, names: Iterable[object]) -> list[str]:
        """``at(base, name)`` for each of ``names``: a map's per-item fields, built with the
        prefix spelt once (there may be 100,000)."""
        prefix = f"{base}{self.value}:"
        return [f"{prefix}{name}" for name in names]

    @classmethod
    def parse_map(cls, field: str) -> tuple[MapField, str, str] | None:
        """(kind, map, the rest) of a maps field (``epoch:<map>`` gives (EPOCH, map, ""));
        None if it is not one."""
        if (epoch := cls.parse(field)) is not None and epoch[0] is cls.EPOCH:
            return cls.EPOCH, epoch[1], ""
        map_id, at, rest = field.partition("@")  # (a step id has no @)
        epoch_no, colon, own = rest.partition(":")
        if not (at and colon and epoch_no.isdigit()):
            return None
        kind, _, name = own.partition(":")
        if kind not in cls._value2member_map_ or cls(kind) is cls.EPOCH:
            return None
        return cls(kind), map_id, name


def map_base(map_id: str, epoch: int) -> str:
    """Where a map's fields are, in the maps hash, for its epoch: ``<map>@<epoch>:``."""
    return f"{map_id}@{epoch}:"


class RateField(StrEnum):
    """The field of a budget's rate hash (``BudgetKeys.rate``)."""

    TAT = "tat"  # the GCRA theoretical arrival time, epoch ms: the next free turn


#: The field of each entry of a workflow's stream (``WorkflowKeys.stream``): the event, JSON.
STREAM_FIELD = "data"
