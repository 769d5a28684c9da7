"""A definition resolved into addressable steps: what the engine actually runs.

Every task step gets a stable ``step_id`` (``step_2``, ``step_3.1``, ``step_3.2.1`` for the
first member of a sequence inside group 3) so that messages can carry ``(workflow_id,
step_id)`` and nothing else. The plan is stored once per workflow and never changes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlannedTask(_Frozen):
    kind: str = "task"
    step_id: str
    index: int  # top-level position, 0-based
    agent_id: str
    task_type: str
    output_key: str | None
    parameters: dict[str, Any] = Field(default_factory=dict)
    group: str | None = None  # step_id of the enclosing parallel group
    after: str | None = None  # the previous step of the same branch sequence

    @property
    def celery_name(self) -> str:
        return f"{self.agent_id}.{self.task_type}"

    @property
    def top_level(self) -> bool:
        return self.group is None


class PlannedGroup(_Frozen):
    kind: str = "group"
    step_id: str
    index: int
    branches: list[list[str]]  # step_ids, one list per branch
    output_key: str | None
    aggregate: str

    @property
    def member_ids(self) -> list[str]:
        return [s for branch in self.branches for s in branch]


class Plan(_Frozen):
    name: str
    description: str = ""
    nodes: list[PlannedTask | PlannedGroup]
    tasks: dict[str, PlannedTask]

    @property
    def total_steps(self) -> int:
        return len(self.nodes)

    def node(self, index: int) -> PlannedTask | PlannedGroup:
        return self.nodes[index]

    def group(self, step_id: str) -> PlannedGroup:
        for node in self.nodes:
            if isinstance(node, PlannedGroup) and node.step_id == step_id:
                return node
        raise KeyError(step_id)

    def is_last(self, index: int) -> bool:
        return index == len(self.nodes) - 1

    def starts_segment(self, index: int) -> bool:
        """Whether node ``index`` is dispatched on its own rather than by a running chain.

        Consecutive task steps share one Celery chain; a group is its own chord. Only
        the first node and whatever follows a group, or a group itself, start a segment.
        """
        if index == 0 or isinstance(self.nodes[index], PlannedGroup):
            return True
        return isinstance(self.nodes[index - 1], PlannedGroup)

    def segment(self, start: int) -> list[PlannedTask] | PlannedGroup:
        """The nodes dispatched together from ``start``: a run of tasks, or one group."""
        first = self.nodes[start]
        if isinstance(first, PlannedGroup):
            return first
        run: list[PlannedTask] = []
        for node in self.nodes[start:]:
            if isinstance(node, PlannedGroup):
                break
            run.append(node)
        return run
