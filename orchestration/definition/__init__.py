"""The definition room: a workflow definition (a dict, YAML or JSON) read, checked against
the agents' catalog and compiled into a :class:`~orchestration.definition.plan.Plan`.
Nothing here reaches Redis or Celery."""

from __future__ import annotations

from orchestration.definition.check import plan_handoff
from orchestration.definition.compile import compile_plan, load_plan
from orchestration.definition.plan import Plan
from orchestration.definition.read import DefinitionSource, read_definition

__all__ = [
    "DefinitionSource",
    "Plan",
    "compile_plan",
    "load_plan",
    "plan_handoff",
    "read_definition",
]
