"""What the client reports about a workflow: status, waits, maps, throttled steps."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

from orchestration.model.records import CompensationOutcome, RunningStep, WorkflowStatus


class WaitingStep(BaseModel):
    """A wait parked in a workflow: the signal it waits for (None: a timer), or the
    sub-workflow (``child``), since when, and until when (its timeout or wake-up time)."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    step_id: str
    name: str | None
    since: str
    until: str | None = None
    child: str | None = None


class MapProgress(BaseModel):
    """How far a map has got: items done (completed), failed, and in all (None: its list
    is not read yet)."""

    model_config = ConfigDict(frozen=True)

    step: str
    done: int = 0
    failed: int = 0
    total: int | None = None


class ThrottledStep(BaseModel):
    """A step waiting for its turn under a rate or concurrency limit (it holds no worker)."""

    model_config = ConfigDict(frozen=True)

    step: str
    limit: str
    why: Literal["rate", "concurrency"]
    until: float  # epoch milliseconds of its next turn (or next look, for concurrency)


class WorkflowStatusReport(BaseModel):
    """``get_workflow_status``'s answer; indexable like the original design's dict."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    name: str
    status: WorkflowStatus
    progress: str
    completion_percentage: float
    task_results: int
    shared_data_keys: list[str]
    current_agent: str | None = None
    running_steps: list[RunningStep] = Field(default_factory=list)
    throttled_steps: list[ThrottledStep] = Field(default_factory=list)
    maps: list[MapProgress] = Field(default_factory=list)
    parent: str | None = None  # a sub-workflow's parent workflow (and ``parent_step``)
    parent_step: str | None = None
    children: list[str] = Field(default_factory=list)  # its sub-workflows' ids
    error: str | None = None
    failed_step: str | None = None
    created_at: str
    updated_at: str | None = None
    finished_at: str | None = None
    version: int = 0
    compensation: CompensationOutcome | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)
