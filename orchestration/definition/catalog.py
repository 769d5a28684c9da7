"""What the core knows of agents: a catalog of task types that definitions are checked
against. The agent registry (``agents.AgentRegistry``) is one; the core never imports it.

``orchestration.client.agents.load_catalog`` is the one seam through which the client
reaches the agents layer.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel

from orchestration.model.limits import Limit


class TaskSpec(Protocol):
    """A registered task type, as far as planning a step needs it."""

    @property
    def compensation(self) -> str | None: ...

    def validate_params(self, raw: dict[str, Any]) -> BaseModel: ...

    def reads_for(self, params: BaseModel) -> list[str]: ...


class Catalog(Protocol):
    def get_task(self, agent_id: str, task_type: str) -> TaskSpec:
        """The task type, or ``UnknownAgent``/``UnknownTaskType`` naming what exists."""
        ...

    def __contains__(self, agent_id: object) -> bool: ...

    def declared_limits(self) -> dict[str, Limit]:
        """Every rate/concurrency limit its agents and task types declare, by name."""
        ...
