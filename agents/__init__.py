"""Agents: the contract (``Agent``, ``StepInput``), the registry, the built-in agents."""

from agents.base import Agent, NoParams, StepInput, TaskType
from agents.registry import AgentRegistry, load_agents, registry

__all__ = ["Agent", "AgentRegistry", "NoParams", "StepInput", "TaskType", "load_agents", "registry"]
