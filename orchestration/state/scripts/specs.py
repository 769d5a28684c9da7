"""What goes into each Lua script: one spec model per script (its ``ARGV[1]``), and the
messages a call sends with it (:class:`Outgoing`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["continue", "complete", "fail"]


# --------------------------------------------------------------------------- what a call sends


class Push(NamedTuple):
    """One thing a script sends: LPUSH ``payload`` onto list ``key`` ("l"), or PUBLISH it
    on channel ``key`` ("p")."""

    op: Literal["l", "p"]
    key: str
    payload: str


@dataclass(frozen=True)
class Outgoing:
    """Task messages a state change sends, built by ``orchestration/flow/outbox.py``.

    ``ids`` are tracked as outstanding in the same script. When the broker is this Redis,
    the script sends ``pushes`` too; else it is empty and the caller publishes them.
    ``group``: the group these messages start, whose ``aggregate`` is kept until its last
    branch ends.
    """

    ids: list[str] = field(default_factory=list)
    pushes: list[Push] = field(default_factory=list)
    group: str | None = None
    aggregate: Outgoing | None = None


NOTHING = Outgoing()


# --------------------------------------------------------------------------- specs


class Spec(BaseModel):
    """Fields every script reads; the store fills them in for each call (:meth:`Scripts.call`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    channel: str = ""  # the workflow's event channel
    status_channel: str = ""  # and its status channel
    now: str = ""
    retention: int = 0  # seconds a finished workflow's keys live
    # What is sent (_outbox.lua): ids to track, then `sends` pushes now; for a group
    # started here (`arm`), its aggregate's ids and `joins` pushes, kept for its end.
    track: list[str] = Field(default_factory=list)
    sends: int = 0
    ops: str = ""
    arm: str | None = None
    join_track: list[str] = Field(default_factory=list)
    joins: int = 0


class CreateSpec(Spec):
    """create.lua; ARGV: spec, plan JSON, first history entry JSON."""

    workflow_id: str
    name: str
    total_steps: int
    score: float
    start: bool = False
    deadline_at: float | None = None
    data: dict[str, str] = Field(default_factory=dict)  # initial shared_data, key -> JSON
    parent: str | None = None  # a sub-workflow: its parent, the parent's step, its timer
    parent_step: str | None = None
    parent_due: str | None = None
    parent_run: int | None = None


class TransitionSpec(Spec):
    """transition.lua."""

    from_: list[str] = Field(alias="from")
    to: str
    event: str
    bump_run: bool = False
    clear_paused: bool = False
    error: str | None = None
    deadline_at: float | None = None


class RestoreSpec(Spec):
    """restore.lua."""

    from_: list[str] = Field(alias="from")
    to: str
    target: int
    event: str
    bump_run: bool = False
    keep_failed: bool = False
    archive_failed: bool = False
    compensation: str | None = None  # CompensationOutcome JSON


class BeginSpec(Spec):
    """begin.lua. ``data_keys`` None loads all of shared_data."""

    step: str
    running_json: str
    run: int
    owner: str = ""
    worker: str = ""
    lease_ms: int
    task_id: str | None = None
    data_keys: list[str] | None = None
    fields: list[str] = Field(default_factory=list)
    inserted_before: int | None = None


class Join(BaseModel):
    model_config = ConfigDict(frozen=True)

    group: str
    total: int


class CommitSpec(Spec):
    """commit.lua; ARGV: spec, output JSON, result JSON, history entry JSON, handoff JSON."""

    step: str
    node: str
    output_key: str = ""
    advance: bool
    outcome: Outcome
    error: str = ""
    run: int
    task_id: str = ""
    owner: str = ""
    join: Join | None = None
    agent_id: str
    task_type: str
    status: str
    seconds: float
    handoff_id: str = ""
    max_handoffs: int = 0
    signal: SignalSpec | None = None
    consume: str = ""  # a wait committing its kept signal: that signal is used up
    add_steps: int = 0  # a branch's choice: the steps on its way, less the branch itself
    outputs: dict[str, str] = Field(default_factory=dict)  # more shared_data keys -> JSON
    skipped: dict[str, str] = Field(default_factory=dict)  # ... and those not taken


class SignalSpec(BaseModel):
    """What commits a parked wait: a signal (its name, idempotency id, sender) or its timer."""

    name: str
    id: str = ""
    by: str = ""
    timer: bool = False


class ParkSpec(Spec):
    """park.lua."""

    step: str
    name: str = ""
    run: int
    task_id: str = ""
    due_ms: int = 0
    due_member: str = ""


class LeaseSpec(Spec):
    """lease.lua."""

    step: str
    owner: str
    lease_ms: int
    release: bool = False
    uncount: bool = False  # (with release) the attempt never started: not counted


class SendSpec(Spec):
    """send.lua."""

    run: int
    replace: bool = False
    ends: list[str] = Field(default_factory=list)
    hold_at: str | None = None


class MapStartSpec(Spec):
    """mapstart.lua. ``base``: the map's prefix in the maps hash (``<step>@<epoch>:``)."""

    map: str
    base: str
    run: int
    task_id: str = ""  # the start's own message
    n: int
    todo: list[int]
    window: int
    reset: bool = False
    per_message: int = 1  # pushes per message (a message and its task-sent event)


class MapBeginSpec(Spec):
    """mapbegin.lua. ``data_keys`` None loads all of shared_data."""

    map: str
    run: int
    task_id: str
    owner: str
    worker: str = ""
    lease_ms: int
    running_json: str
    size: int
    data_keys: list[str] | None = None
    fields: list[str] = Field(default_factory=list)


class MapCommitSpec(Spec):
    """mapcommit.lua; ARGV: spec, one result JSON per index."""

    map: str
    base: str
    run: int
    batch: int
    step: str
    task_id: str
    indices: list[int]
    ok: list[bool]
    earlier_failed: int = 0
    seconds: list[float]
    agent_id: str
    task_type: str
    n: int
    per_message: int = 1


class ClaimSpec(BaseModel):
    """claim.lua (not a workflow's script: KEYS is the due index alone)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    now_ms: int
    limit: int
    reclaim_ms: int


class LimitBudget(BaseModel):
    """One budget as limit.lua reads it: its limit's name, its key, the rate's spacing (ms
    between turns) and the concurrency (None: not limited that way)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    key: str
    rate_ms: float | None
    concurrency: int | None


class AdmitSpec(BaseModel):
    """limit.lua, admitting ``owner`` (a step, or an ``item`` of the map ``step``) under its
    budgets; KEYS: the overrides hash, the budgets set, the workflow's throttled hash and
    stream, then each budget's keys (``keys.BudgetKeys.all``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    owner: str
    step: str
    reserved: bool
    item: bool = False
    slot_ttl_ms: int
    horizon_ms: int
    retry_ms: int
    near_ms: int
    allowance_ms: int
    stream_maxlen: int
    limits: list[LimitBudget]


class ReleaseSpec(BaseModel):
    """limit.lua's ``release``: ``owner``'s slots given back, the waiters first in line for
    them woken on ``channel``; KEYS as :class:`AdmitSpec`'s, without a workflow's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: Literal["release"] = "release"
    owner: str
    channel: str
    limits: list[LimitBudget]
