"""Agents: the contract (``StepInput``, ``Handoff``), ``Agent`` and its registry, and the
built-in agents (imported by ``load_agents``)."""

from agents.base import Handoff, NoParams, StepInput, TaskType
from agents.registry import Agent, AgentRegistry, load_agents, registry
from orchestration.errors import StepError

__all__ = [
    "Agent",
    "AgentRegistry",
    "Handoff",
    "NoParams",
    "StepError",
    "StepInput",
    "TaskType",
    "load_agents",
    "registry",
]
