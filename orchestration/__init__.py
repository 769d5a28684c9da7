"""Baton's core (definitions, plans, the state store and its scripts, the wire format of
messages) and, on top of it, the client API."""

from __future__ import annotations

from orchestration.client.orchestrator import WorkflowOrchestrator
from orchestration.errors import (
    BatonError,
    DefinitionError,
    SignalError,
    StateStoreError,
    StepError,
    StepFailed,
    UnknownAgent,
    UnknownTaskType,
    WorkflowNotFound,
    WorkflowStateError,
    WorkflowTimeout,
)
from orchestration.model import (
    ParallelStep,
    StreamEvent,
    TaskResult,
    TaskStatus,
    TaskStep,
    WorkflowContext,
    WorkflowDefinition,
    WorkflowStatus,
    WorkflowStatusReport,
)

__all__ = [
    "SignalError",
    "StreamEvent",
    "BatonError",
    "DefinitionError",
    "StateStoreError",
    "ParallelStep",
    "StepError",
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
