"""The process-wide agent registry: agents add themselves; nothing branches on ids."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from orchestration.errors import DuplicateAgent, UnknownAgent, UnknownTaskType

if TYPE_CHECKING:
    from agents.base import Agent, TaskType

BUILTIN_MODULES = (
    "agents.data_processor",
    "agents.analyzer",
    "agents.reporter",
    "agents.validator",
    "agents.enricher",
    "agents.classifier",
    "agents.scorer",
)


class AgentRegistry:
    def __init__(self) -> None:
        self._agents: dict[str, Agent] = {}

    def add(self, agent: Agent) -> None:
        existing = self._agents.get(agent.agent_id)
        if existing is not None and existing is not agent:
            raise DuplicateAgent(f"agent {agent.agent_id!r} is registered twice")
        self._agents[agent.agent_id] = agent

    def get_agent(self, agent_id: str) -> Agent:
        try:
            return self._agents[agent_id]
        except KeyError:
            known = ", ".join(sorted(self._agents)) or "none"
            raise UnknownAgent(f"unknown agent {agent_id!r} (registered: {known})") from None

    def get_task(self, agent_id: str, task_type: str) -> TaskType:
        agent = self.get_agent(agent_id)
        try:
            return agent.task_types[task_type]
        except KeyError:
            known = ", ".join(sorted(agent.task_types)) or "none"
            raise UnknownTaskType(
                f"agent {agent_id!r} has no task type {task_type!r} (it has: {known})"
            ) from None

    def __iter__(self) -> Iterator[Agent]:
        return iter(sorted(self._agents.values(), key=lambda a: a.agent_id))

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def task_types(self) -> Iterator[TaskType]:
        for agent in self:
            yield from agent.task_types.values()


registry = AgentRegistry()


def load_agents(extra_modules: Iterable[str] = ()) -> AgentRegistry:
    """Import the built-in agents and any user modules (``BATON_AGENT_MODULES``)."""
    for name in (*BUILTIN_MODULES, *extra_modules):
        if name:
            importlib.import_module(name)
    return registry
