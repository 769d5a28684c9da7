"""Agents: the contract (``Agent``, ``StepInput``), the registry, the built-in agents."""

from agents.base import Agent, Handoff, NoParams, StepInput, TaskType
from agents.registry import AgentRegistry, load_agents, registry

__all__ = [
    "Agent",
    "AgentRegistry",
    "Handoff",
    "NoParams",
    "StepInput",
    "TaskType",
    "load_agents",
    "registry",
]
