"""The typed contract between Python and the Lua scripts in ``orchestration/state/lua``.

Each script has one spec model (what goes in, as ``ARGV[1]``) and one reply record with
a ``decode`` (what comes back); nothing else reads a script's reply by position. Every
script is registered as: the names from ``names.py``, ``_lib.lua``, ``_outbox.lua``, then
the script itself; KEYS are always the workflow's keys (``WorkflowKeys.all``), the
index, the metrics hash, the active set, then the queues and channels of the messages
the call sends (:class:`Outgoing`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar, Literal, NamedTuple, Self

import redis
from pydantic import BaseModel, ConfigDict, Field

from orchestration.errors import StateStoreError
from orchestration.model import utcnow
from orchestration.model.names import lua_prelude
from orchestration.state.connection import text
from orchestration.state.keys import WorkflowKeys, active_key, due_key, index_key, metrics_key

Outcome = Literal["continue", "complete", "fail"]
SCRIPTS = (
    "create", "transition", "begin", "commit", "restore", "lease", "send", "park",
    "mapstart", "mapbegin", "mapcommit",
)  # fmt: skip
Raw = list[Any]


def _source(name: str) -> str:
    lua = resources.files("orchestration.state").joinpath("lua")
    parts = [lua_prelude(), *(lua.joinpath(f"{n}.lua").read_text() for n in ("_lib", "_outbox"))]
    return "\n".join([*parts, lua.joinpath(f"{name}.lua").read_text()])


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


# --------------------------------------------------------------------------- replies


def _bad(script: str, raw: object) -> StateStoreError:
    return StateStoreError(f"{script}.lua replied {raw!r}: not a reply it gives")


def _shape(script: str, raw: Raw, *lengths: int) -> None:
    if not isinstance(raw, list) or len(raw) not in lengths:
        raise _bad(script, raw)


def _list(script: str, raw: object) -> Raw:
    if not isinstance(raw, list) or not raw:
        raise _bad(script, raw)
    return raw


def _flag(script: str, raw: object) -> bool:
    """A script's 0/1 reply."""
    if isinstance(raw, bool) or raw not in (0, 1):
        raise _bad(script, raw)
    return raw == 1


@dataclass(frozen=True)
class CreateReply:
    created: bool  # False: the id existed already, nothing was written
    conflict: bool = False  # ... and with another plan than this one

    @classmethod
    def decode(cls, raw: int) -> CreateReply:
        if raw == 2 and not isinstance(raw, bool):
            return cls(False, conflict=True)
        return cls(_flag("create", raw))


@dataclass(frozen=True)
class StatusRefusal:
    """Replies of scripts that check the workflow's status first (``status_among``)."""

    state: Literal["ok", "missing", "refused", "invalid"]
    status: str  # the status it had (refused: the one that refused)

    @classmethod
    def refusal(cls, script: str, raw: Raw) -> Self | None:
        """The reply if it is a refusal (``missing``, ``refused``); None if it is not."""
        state = text(raw[0])
        if state not in ("missing", "refused"):
            return None
        _shape(script, raw, 2)
        return cls(state, text(raw[1]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class TransitionReply(StatusRefusal):
    run: int = 0
    paused_at: str | None = None  # where a pause stopped something, if it did
    outstanding: list[str] = field(default_factory=list)  # a cancel's task ids

    @classmethod
    def decode(cls, raw: Raw) -> TransitionReply:
        raw = _list("transition", raw)
        if (refused := cls.refusal("transition", raw)) is not None:
            return refused
        if text(raw[0]) != "ok" or len(raw) < 4:
            raise _bad("transition", raw)
        return cls(
            "ok", text(raw[1]), int(raw[2]), text(raw[3]) or None, [text(i) for i in raw[4:]]
        )


@dataclass(frozen=True)
class RestoreReply(StatusRefusal):
    """``invalid``: the target is no checkpoint; ``version`` is then the latest one."""

    version: int = 0  # the version the restore made
    run: int = 0

    @classmethod
    def decode(cls, raw: Raw) -> RestoreReply:
        raw = _list("restore", raw)
        if (refused := cls.refusal("restore", raw)) is not None:
            return refused
        if text(raw[0]) == "invalid":
            _shape("restore", raw, 2)
            return cls("invalid", "", int(raw[1]))
        _shape("restore", raw, 4)
        if text(raw[0]) != "ok":
            raise _bad("restore", raw)
        return cls("ok", text(raw[1]), int(raw[2]), int(raw[3]))


@dataclass(frozen=True)
class BeginReply:
    """``status``: the workflow's status (the step runs only when ``running``), or
    ``missing``, ``stale`` (another run), ``committed`` (already done) or ``leased``
    (another live execution holds it)."""

    status: str
    attempt: int
    data: dict[str, Any] = field(default_factory=dict)
    results: dict[bytes, bytes] = field(default_factory=dict)

    @classmethod
    def decode(cls, raw: Raw) -> BeginReply:
        raw = _list("begin", raw)
        if len(raw) == 2:
            return cls(text(raw[0]), int(raw[1]))
        _shape("begin", raw, 4)
        data, results = raw[2], raw[3]
        return cls(
            text(raw[0]),
            int(raw[1]),
            {text(k): json.loads(v) for k, v in zip(data[::2], data[1::2], strict=True)},
            dict(zip(results[::2], results[1::2], strict=True)),
        )


@dataclass(frozen=True)
class CommitReply:
    state: Literal[
        "committed",
        "duplicate",
        "not_running",
        "stale",
        "missing",
        "kept",  # a signal for a wait not reached yet: kept for it
        "duplicate_signal",  # its signal_id was applied (or kept) before
        "already_signalled",  # a signal of that name is kept already
        "not_waiting",  # a timer for a wait no longer parked
    ]
    version: int = 0
    status: str = ""  # the workflow's status after the commit
    aggregate_id: str = ""  # this commit ended its group's last branch: the aggregate sent
    aggregate_message: str = ""  # (its message, on the Redis broker)

    STATES: ClassVar[tuple[str, ...]] = (
        "committed",
        "duplicate",
        "not_running",
        "stale",
        "missing",
        "kept",
        "duplicate_signal",
        "already_signalled",
        "not_waiting",
    )

    @property
    def committed(self) -> bool:
        return self.state == "committed"

    @classmethod
    def decode(cls, raw: Raw) -> CommitReply:
        _shape("commit", raw, 5)
        state = text(raw[0])
        if state not in cls.STATES:
            raise _bad("commit", raw)
        return cls(state, int(raw[1] or 0), text(raw[2]), text(raw[3]), text(raw[4]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ParkReply:
    state: Literal["parked", "signalled", "not_running", "stale"]
    status: str  # the workflow's, after

    @classmethod
    def decode(cls, raw: Raw) -> ParkReply:
        _shape("park", raw, 2)
        state = text(raw[0])
        if state not in ("parked", "signalled", "not_running", "stale"):
            raise _bad("park", raw)
        return cls(state, text(raw[1]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class LeaseReply:
    held: bool  # False: this execution no longer holds the lease

    @classmethod
    def decode(cls, raw: int) -> LeaseReply:
        return cls(_flag("lease", raw))


@dataclass(frozen=True)
class SendReply:
    """``state``: ``ok``, ``missing``, or the status that refused (paused, cancelled, ...
    or ``stale`` for another run); on ``ok``, the group's aggregate if it went too."""

    state: str
    aggregate_id: str = ""
    aggregate_message: str = ""

    @property
    def sent(self) -> bool:
        return self.state == "ok"

    @classmethod
    def decode(cls, raw: Raw) -> SendReply:
        _shape("send", raw, 3)
        return cls(text(raw[0]), text(raw[1]), text(raw[2]))


@dataclass(frozen=True)
class MapBeginReply:
    """``state`` ``ok``: the batch to run, its attempt, what its items may see, its items
    (JSON) and their results from earlier runs (JSON, or empty: none). Else why not:
    ``missing``, ``stale``, a status (``paused``, ...), ``duplicate``, ``drained``,
    ``leased``."""

    state: str
    batch: int = 0
    attempt: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    results: dict[bytes, bytes] = field(default_factory=dict)
    items: list[Any] = field(default_factory=list)
    earlier: list[bytes] = field(default_factory=list)
    base: str = ""  # the map's prefix in the maps hash (its epoch's)
    n: int = 0  # its items

    @classmethod
    def decode(cls, raw: Raw) -> MapBeginReply:
        raw = _list("mapbegin", raw)
        if len(raw) == 1:
            return cls(text(raw[0]))
        _shape("mapbegin", raw, 9)
        data, results = raw[3], raw[4]
        return cls(
            text(raw[0]),
            int(raw[1]),
            int(raw[2]),
            {text(k): json.loads(v) for k, v in zip(data[::2], data[1::2], strict=True)},
            dict(zip(results[::2], results[1::2], strict=True)),
            json.loads(raw[5]),
            list(raw[6]),
            text(raw[7]),
            int(raw[8]),
        )


@dataclass(frozen=True)
class MapStartReply:
    """``state``: ``ok``, ``missing``, ``stale`` or the status that refused; ``sent``: how
    many of the messages went; the map's aggregate, if it went too."""

    state: str
    sent: int = 0
    aggregate_id: str = ""
    aggregate_message: str = ""

    @classmethod
    def decode(cls, raw: Raw) -> MapStartReply:
        _shape("mapstart", raw, 4)
        return cls(text(raw[0]), int(raw[1]), text(raw[2]), text(raw[3]))


@dataclass(frozen=True)
class MapCommitReply:
    state: Literal["committed", "duplicate", "not_running", "stale", "missing"]
    status: str = ""
    sent: int = 0  # the next message went (batches remain)
    aggregate_id: str = ""
    aggregate_message: str = ""

    @property
    def committed(self) -> bool:
        return self.state == "committed"

    @classmethod
    def decode(cls, raw: Raw) -> MapCommitReply:
        _shape("mapcommit", raw, 5)
        state = text(raw[0])
        if state not in ("committed", "duplicate", "not_running", "stale", "missing"):
            raise _bad("mapcommit", raw)
        return cls(state, text(raw[1]), int(raw[2]), text(raw[3]), text(raw[4]))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- calling


class Scripts:
    """The scripts registered on one Redis client, called with typed specs."""

    def __init__(self, client: redis.Redis[bytes], prefix: str, retention: int) -> None:
        self.prefix, self.retention = prefix, retention
        self._fixed = [index_key(prefix), metrics_key(prefix), active_key(prefix), due_key(prefix)]
        self._scripts = {name: client.register_script(_source(name)) for name in SCRIPTS}

    def call(
        self,
        name: str,
        keys: WorkflowKeys,
        spec: Spec,
        *args: str,
        send: Outgoing = NOTHING,
        client: redis.client.Pipeline[bytes] | None = None,
    ) -> Any:
        """Run script ``name`` for one workflow; it also sends ``send`` (see _outbox.lua).
        On a pipeline (``client``), it is queued there; its reply comes from ``execute``."""
        join = send.aggregate or NOTHING
        pushes = [*send.pushes, *join.pushes]
        full = spec.model_copy(
            update={
                "channel": keys.events,
                "status_channel": keys.statuses,
                "now": spec.now or utcnow(),
                "retention": self.retention,
                "track": send.ids,
                "sends": len(send.pushes),
                "join_track": join.ids,
                "joins": len(join.pushes),
                "ops": "".join(p.op for p in pushes),
                "arm": send.group,
            }
        )
        return self._scripts[name](
            keys=[*keys.all(), *self._fixed, *(p.key for p in pushes)],
            # None is left out: cjson's null is truthy in Lua.
            args=[full.model_dump_json(by_alias=True, exclude_none=True), *args,
                  *(p.payload for p in pushes)],
            client=client,
        )  # fmt: skip
