"""Workflow definitions registered by name, for sub-workflow steps to call
(``{"workflow": "Data Analysis Pipeline"}``).

A name is resolved when the calling workflow is created: the definition registered then is
copied into its plan, so a workflow always runs the version it was checked with, whatever
is registered later.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from orchestration.definition import DefinitionSource, read_definition
from orchestration.errors import DefinitionError
from orchestration.model import BranchStep, ParallelStep, TaskStep, WhenStep, WorkflowDefinition
from orchestration.model.waits import SUBFLOW_TASK, WAIT_AGENT
from orchestration.state.connection import text
from orchestration.state.keys import definitions_key

#: What a register refuses: another definition under that name (``replace`` replaces it).
TAKEN = "a different definition is registered as"


class Definitions:
    def __init__(self, client: redis.Redis[bytes], prefix: str) -> None:
        self.redis, self.key = client, definitions_key(prefix)

    def register(self, source: DefinitionSource, replace: bool = False) -> str:
        """Register a definition under its ``name``; its own sub-workflow names are resolved
        now. The same definition again is accepted; a different one already registered
        under that name is kept and this one refused (``DefinitionError`` naming the name)
        unless ``replace``. Atomic: of two registering different ones at once, one is kept
        (HSETNX), the other refused."""
        definition = self.resolve(read_definition(source))
        name, raw = definition.name, definition.model_dump_json(by_alias=True)
        if replace:
            self.redis.hset(self.key, name, raw)
            return name
        while not self.redis.hsetnx(self.key, name, raw):
            current = self.get(name)
            if current is None:
                continue  # (removed meanwhile: set it again)
            if current != json.loads(raw):
                raise DefinitionError([("name", f"{TAKEN} {name!r}")])
            break
        return name

    def names(self) -> list[str]:
        return sorted(text(n) for n in self.redis.hkeys(self.key))

    def get(self, name: str) -> dict[str, Any] | None:
        raw = self.redis.hget(self.key, name)
        return None if raw is None else dict(json.loads(raw))

    def resolve(
        self, definition: WorkflowDefinition, calling: frozenset[str] = frozenset()
    ) -> WorkflowDefinition:
        """``definition`` with every sub-workflow named by a registered name inlined (a name
        not registered is left for the checks to name)."""
        calling = calling | {definition.name}

        def inline(step: TaskStep) -> TaskStep:
            name = step.parameters.get("workflow")
            if (step.agent_id, step.task_type) != (WAIT_AGENT, SUBFLOW_TASK):
                return step
            if not isinstance(name, str):
                return step
            if name in calling:
                raise DefinitionError([("workflow", f"{name!r} calls itself")])
            found = self.get(name)
            if found is None:
                return step
            child = self.resolve(read_definition(found), calling)
            params = {**step.parameters, "workflow": child.model_dump(mode="json", by_alias=True)}
            return step.model_copy(update={"parameters": params})

        def members(steps: list[Any]) -> list[Any]:
            return [members(s) if isinstance(s, list) else inline(s) for s in steps]

        steps: list[Any] = []
        for step in definition.steps:
            if isinstance(step, TaskStep):
                step = inline(step)
            elif isinstance(step, ParallelStep):
                step = step.model_copy(update={"parallel": members(step.parallel)})
            elif isinstance(step, BranchStep):
                ways = {k: members(v) for k, v in step.branch.cases.items()}
                default = members(step.branch.default) if step.branch.default else None
                step = step.model_copy(
                    update={
                        "branch": step.branch.model_copy(update={"cases": ways, "default": default})
                    }
                )
            elif isinstance(step, WhenStep):
                step = step.model_copy(
                    update={"then": members(step.then), "else_": members(step.else_)}
                )
            steps.append(step)
        return definition.model_copy(update={"steps": steps})
