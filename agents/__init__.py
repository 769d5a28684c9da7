"""Agents: the contract (``StepInput``, ``Handoff``), ``Agent`` and its registry, and the
built-in agents (imported by ``load_agents``)."""

from agents.base import MAX_EMIT_BYTES, Handoff, NoParams, StepInput, TaskType, WaitFor
from agents.registry import Agent, AgentRegistry, load_agents, registry
from orchestration.errors import EmitTooLarge, LimitError, StepError

__all__ = [
    "MAX_EMIT_BYTES",
    "Agent",
    "AgentRegistry",
    "EmitTooLarge",
    "Handoff",
    "LimitError",
    "NoParams",
    "StepError",
    "StepInput",
    "TaskType",
    "WaitFor",
    "load_agents",
    "registry",
]
