"""What comes back from each Lua script: one reply record per script, with a ``decode``;
nothing else reads a script's reply by position."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, Self

from pydantic import BaseModel

from orchestration.errors import StateStoreError
from orchestration.state.connection import text
from orchestration.state.keys import parse_due_member

Raw = list[Any]


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


class Delivery(Protocol):
    """What a script that sends messages replies about them: how many of the messages it
    was given went (``delivered``; None: all, and a big group's later batches may follow),
    and the group's (or map's) aggregate if this change sent it too (armed earlier, so
    the caller did not build it: on the Redis broker, ``aggregate_message`` is it)."""

    @property
    def delivered(self) -> int | None: ...

    @property
    def aggregate_id(self) -> str: ...

    @property
    def aggregate_message(self) -> str: ...


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

    @property
    def delivered(self) -> int | None:
        """The script sent what follows (None: all of it) while the workflow runs."""
        return None if self.committed and self.status in ("running", "waiting") else 0

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

    @property
    def delivered(self) -> int | None:
        return None if self.sent else 0

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

    @property
    def delivered(self) -> int:
        return self.sent if self.state == "ok" else 0

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

    @property
    def delivered(self) -> int:
        return self.sent if self.committed else 0

    @classmethod
    def decode(cls, raw: Raw) -> MapCommitReply:
        _shape("mapcommit", raw, 5)
        state = text(raw[0])
        if state not in ("committed", "duplicate", "not_running", "stale", "missing"):
            raise _bad("mapcommit", raw)
        return cls(state, text(raw[1]), int(raw[2]), text(raw[3]), text(raw[4]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ClaimReply:
    """The timers claimed: (workflow_id, step_id, run) each."""

    timers: list[tuple[str, str, int]]

    @classmethod
    def decode(cls, raw: object) -> ClaimReply:
        if not isinstance(raw, list):
            raise _bad("claim", raw)
        return cls([parse_due_member(text(m)) for m in raw])


class Admission(BaseModel):
    """limit.lua's answer. ``admitted``: start the call in ``wait`` seconds (its turn; at
    most ``NEAR``). ``reserved``: come back in ``wait`` seconds (its turn is held).
    ``wait``: ask again in ``wait`` seconds (nothing is held)."""

    state: Literal["admitted", "reserved", "wait"]
    wait: float = 0.0
    #: Admitted under a rate: its call starts at its turn (epoch seconds, Redis' clock:
    #: when the reply is read late, the turn stays where it is).
    turn: float | None = None
    limit: str | None = None
    why: Literal["rate", "concurrency"] | None = None

    @classmethod
    def decode(cls, raw: object) -> Admission:
        """``{'admitted', wait_ms, turn_ms or ''}``, ``{'reserved', wait_ms, limit}`` or
        ``{'wait', wait_ms, limit, why}``."""
        raw = _list("limit", raw)
        state, wait = text(raw[0]), int(raw[1]) / 1000
        if state == "admitted":
            _shape("limit", raw, 3)
            return cls(
                state=state, wait=wait, turn=float(text(raw[2])) / 1000 if text(raw[2]) else None
            )
        if state == "reserved":
            _shape("limit", raw, 3)
            return cls(state=state, wait=wait, limit=text(raw[2]), why="rate")
        if state == "wait":
            _shape("limit", raw, 4)
            return cls(state=state, wait=wait, limit=text(raw[2]), why=text(raw[3]))
        raise _bad("limit", raw)


def released(raw: object) -> int:
    """limit.lua's ``release`` answer: how many waiters it woke."""
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _bad("limit", raw)
    return raw
