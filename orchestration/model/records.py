"""Results and state as they travel: task results, history, checkpoints, contexts.

Field and status names follow the original in-process design (``TaskResult``,
``WorkflowContext``, ``TaskStatus``, ``WorkflowStatus``) so its users feel at home.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

IDENT = r"^[A-Za-z_][A-Za-z0-9_\-]*$"
#: What a workflow id may be: the client refuses others, the dashboard answers 404.
WORKFLOW_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")


def utcnow() -> str:
    return datetime.now(UTC).isoformat()


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON, as the state store keeps values (NaN refused: JSON has none)."""
    return _ENCODER.encode(value)


class TaskStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    WAITING = "waiting"
    SKIPPED = "skipped"  # on a way of a branch not taken


class WorkflowStatus(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PAUSED = "paused"
    COMPENSATING = "compensating"  # failed; compensations of completed steps are running
    CANCELLED = "cancelled"
    WAITING = "waiting"  # nothing runs; a wait step waits for a signal or a time

    @property
    def is_terminal(self) -> bool:
        return self in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED)


# --------------------------------------------------------------------------- results and state


class TaskResult(BaseModel):
    """What one agent task produced, committed to the state store as one record."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    agent_id: str
    status: TaskStatus
    result: Any = None
    error: str | None = None
    execution_time: float = 0.0
    metadata: dict[str, Any] = Field(default_factory=dict)
    step_id: str = ""
    task_type: str = ""
    output_key: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    worker: str | None = None


class HistoryEntry(BaseModel):
    """One line of a workflow's execution history."""

    model_config = ConfigDict(frozen=True, extra="allow")

    event: str
    step: str | None = None
    agent_id: str | None = None
    task_type: str | None = None
    status: str | None = None
    execution_time: float | None = None
    error: str | None = None
    version: int | None = None
    attempt: int | None = None
    changed: list[str] | None = None
    restored_to: int | None = None  # a restore's: the checkpoint it restored
    timestamp: str = Field(default_factory=utcnow)

    @field_validator("changed", mode="before")
    @classmethod
    def _empty_lua_table(cls, value: Any) -> Any:
        return [] if value == {} else value  # Lua's cjson writes an empty list as {}


class Checkpoint(BaseModel):
    """One version of a workflow's state: which step made it, when, and what it changed.

    ``changed`` names shared_data keys (``data:<key>``) and task results (``result:<step>``).
    """

    model_config = ConfigDict(frozen=True)

    version: int
    event: str
    step: str | None = None
    agent_id: str | None = None
    task_type: str | None = None
    changed: list[str] = Field(default_factory=list)
    restored_to: int | None = None  # a restore (rollback, retry, saga): the version it restored
    timestamp: str


class CompensationOutcome(BaseModel):
    """What the saga did after a failure: steps compensated (in order), their failures."""

    model_config = ConfigDict(frozen=True)

    compensated: list[str] = Field(default_factory=list)
    failures: dict[str, str] = Field(default_factory=dict)
    restored_to_version: int | None = None


class WorkflowContext(BaseModel):
    """A workflow's full handoff state as stored in Redis."""

    workflow_id: str
    name: str = ""
    created_at: str
    status: WorkflowStatus
    current_step: int
    total_steps: int
    shared_data: dict[str, Any] = Field(default_factory=dict)
    task_results: dict[str, TaskResult] = Field(default_factory=dict)
    execution_history: list[HistoryEntry] = Field(default_factory=list)
    version: int = 0
    error: str | None = None
    failed_step: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    run: int = 1
    compensation: CompensationOutcome | None = None


class RunningStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    step_id: str
    agent_id: str
    task_type: str
    started_at: str
    worker: str | None = None


class StreamEvent(BaseModel):
    """One event of a workflow's stream (``orchestrator.stream``), in the order it happened.

    ``event`` is ``step_started``, ``emitted`` (``data``: what ``step.emit`` gave),
    ``progress`` (``data``: done, total, message), ``committed`` (``result``: the step's
    status, ``error``), ``status`` (the workflow's new ``status``), or a history event
    (``step_retry``, ...). ``id`` is the stream id to resume from (``since=``).
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    event: str
    step: str | None = None
    data: Any = None
    status: str | None = None  # the workflow's status, when the event set it
    result: str | None = None
    error: str | None = None
    version: int | None = None

    @property
    def at(self) -> datetime:
        """When Redis recorded it (a stream id starts with its milliseconds)."""
        return datetime.fromtimestamp(int(self.id.split("-", 1)[0]) / 1000, UTC)

    @property
    def ends(self) -> bool:
        """The workflow ended here (completed, failed or cancelled)."""
        return self.status in ("completed", "failed", "cancelled")
