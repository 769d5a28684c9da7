"""Baton's orchestration layer: definitions, plans, the state store and the client API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestration.errors import (
    BatonError,
    DefinitionError,
    StateStoreError,
    StepFailed,
    UnknownAgent,
    UnknownTaskType,
    WorkflowNotFound,
    WorkflowStateError,
    WorkflowTimeout,
)
from orchestration.models import (
    ParallelStep,
    TaskResult,
    TaskStatus,
    TaskStep,
    WorkflowContext,
    WorkflowDefinition,
    WorkflowStatus,
    WorkflowStatusReport,
)

if TYPE_CHECKING:
    from orchestration.client import WorkflowOrchestrator

__all__ = [
    "BatonError",
    "DefinitionError",
    "StateStoreError",
    "ParallelStep",
    "StepFailed",
    "TaskResult",
    "TaskStatus",
    "TaskStep",
    "UnknownAgent",
    "UnknownTaskType",
    "WorkflowContext",
    "WorkflowDefinition",
    "WorkflowNotFound",
    "WorkflowOrchestrator",
    "WorkflowStateError",
    "WorkflowStatus",
    "WorkflowStatusReport",
    "WorkflowTimeout",
]


def __getattr__(name: str) -> Any:
    # Imported lazily: the client pulls in Celery and the workers package, which in
    # turn import agents; agents import this package's models.
    if name == "WorkflowOrchestrator":
        from orchestration.client import WorkflowOrchestrator

        return WorkflowOrchestrator
    raise AttributeError(name)
