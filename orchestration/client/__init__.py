"""The client room: :class:`WorkflowOrchestrator` (what users call) and the embedded
supervisor that starts a redis-server and ``baton worker`` processes for it."""

from __future__ import annotations

from orchestration.client.orchestrator import WorkflowOrchestrator

__all__ = ["WorkflowOrchestrator"]
