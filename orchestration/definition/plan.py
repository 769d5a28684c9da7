"""A definition resolved into addressable steps: what the engine actually runs.

Every task step gets a stable ``step_id`` (``step_2``, ``step_3.1``, ``step_3.2.1`` for the
first member of a sequence inside group 3) so that messages can carry ``(workflow_id,
step_id)`` and nothing else. The plan is stored once per workflow and never changes.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlannedTask(_Frozen):
    kind: Literal["task"] = "task"
    step_id: str
    index: int  # top-level position, 0-based
    agent_id: str
    task_type: str
    output_key: str | None
    parameters: dict[str, Any] = Field(default_factory=dict)
    group: str | None = None  # step_id of the enclosing parallel group
    branch: str | None = None  # step_id of the enclosing branch (its steps run in turn)
    after: str | None = None  # the previous step of the same branch sequence
    context_keys: list[str] | None = None
    retries: int = 0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0
    timeout: float | None = None
    compensation: str | None = None  # task type of the same agent that undoes this one
    dynamic: bool = False  # inserted at run time by a handoff

    @property
    def celery_name(self) -> str:
        return f"{self.agent_id}.{self.task_type}"


class PlannedGroup(_Frozen):
    kind: Literal["group"] = "group"
    step_id: str
    index: int
    branches: list[list[str]]  # step_ids, one list per branch
    output_key: str | None
    aggregate: str
    on_failure: str = "continue"
    min_success_rate: float | None = None

    @property
    def member_ids(self) -> list[str]:
        return [s for branch in self.branches for s in branch]


class PlannedMap(_Frozen):
    """A map: ``member`` (its step_id is the map's) runs once per item of the list at
    ``over_path`` in shared_data[``over_key``], ``batch_size`` items a message."""

    kind: Literal["map"] = "map"
    step_id: str
    index: int
    member: PlannedTask
    over_key: str
    over_path: list[str] = Field(default_factory=list)
    output_key: str | None
    aggregate: str
    batch_size: int = 1
    max_concurrency: int | None = None
    on_failure: str = "continue"
    min_success_rate: float | None = None

    @property
    def over(self) -> str:
        return ".".join([self.over_key, *self.over_path])

    def window(self, concurrent: bool) -> int:
        """Batches in flight at once: as many as ``max_concurrency`` items fill (at least
        one). A batch of an async task has all its items in flight (``concurrent``); of a
        plain one, one item at a time."""
        if self.max_concurrency is None:
            return 1 << 30
        return max(1, self.max_concurrency // (self.batch_size if concurrent else 1))

    def in_flight(self, concurrent: bool) -> int:
        """Items of one batch in flight at once."""
        if not concurrent:
            return 1
        return min(self.batch_size, self.max_concurrency or self.batch_size)


class PlannedCase(_Frozen):
    """One way through a branch: taken when the value equals ``equals`` (with ``loose``, a
    number or boolean also matches its JSON text: a case named ``"3"`` or ``"true"``)."""

    name: str
    equals: Any = None
    loose: bool = False
    steps: list[str] = Field(default_factory=list)

    def matches(self, value: Any) -> bool:
        if self.loose and not isinstance(value, str) and value is not None:
            return bool(json.dumps(value) == self.equals)
        # Strictly: True is not 1, 1 is 1.0 (JSON has one kind of number).
        if isinstance(value, bool) or isinstance(self.equals, bool):
            return type(value) is type(self.equals) and value == self.equals
        same: bool = value == self.equals
        return same


class PlannedBranch(_Frozen):
    """A branch: the steps of the first case whose value matches the one at ``on_path``
    in shared_data[``on_key``] run in turn (else ``default``'s, else none)."""

    kind: Literal["branch"] = "branch"
    step_id: str
    index: int
    on_key: str
    on_path: list[str] = Field(default_factory=list)
    cases: list[PlannedCase]
    default: PlannedCase | None = None
    output_key: None = None

    @property
    def on(self) -> str:
        return ".".join([self.on_key, *self.on_path])

    def choose(self, value: Any) -> PlannedCase | None:
        return next((c for c in self.cases if c.matches(value)), self.default)

    @property
    def ways(self) -> list[PlannedCase]:
        return [*self.cases, *([self.default] if self.default else [])]

    def way_of(self, step_id: str) -> PlannedCase:
        return next(c for c in self.ways if step_id in c.steps)


Node = PlannedTask | PlannedGroup | PlannedMap | PlannedBranch
#: A plan's node, told apart by its ``kind``.
AnyNode = Annotated[Node, Field(discriminator="kind")]


class Plan(_Frozen):
    name: str
    description: str = ""
    nodes: list[AnyNode]
    tasks: dict[str, PlannedTask]
    max_handoffs: int = 10
    deadline_seconds: float | None = None

    @property
    def total_steps(self) -> int:
        return len(self.nodes)

    def group(self, step_id: str) -> PlannedGroup:
        for node in self.nodes:
            if isinstance(node, PlannedGroup) and node.step_id == step_id:
                return node
        raise KeyError(step_id)

    def map(self, step_id: str) -> PlannedMap:
        for node in self.nodes:
            if isinstance(node, PlannedMap) and node.step_id == step_id:
                return node
        raise KeyError(step_id)

    def branch(self, step_id: str) -> PlannedBranch:
        for node in self.nodes:
            if isinstance(node, PlannedBranch) and node.step_id == step_id:
                return node
        raise KeyError(step_id)

    def ends_workflow(self, task: PlannedTask) -> bool:
        """Whether committing ``task`` completes the workflow: the last top-level step, or
        the last step of the way taken through a branch that is last."""
        if task.group is not None or not self.is_last(task.index):
            return False
        if task.branch is not None:
            return self.branch(task.branch).way_of(task.step_id).steps[-1] == task.step_id
        return True

    def node(self, step_id: str) -> Node | None:
        return next((n for n in self.nodes if n.step_id == step_id), None)

    @property
    def maps(self) -> list[PlannedMap]:
        return [n for n in self.nodes if isinstance(n, PlannedMap)]

    def visible_results(self, task: PlannedTask) -> tuple[list[str], int]:
        """The results a step is shown as ``previous_results``: every earlier top-level step
        (a group by its aggregate), its own branch predecessors, and (second item: steps
        inserted by handoffs from top-level numbers below it) the inserted ones before it."""
        ids = [n.step_id for n in self.nodes[: task.index]]
        if task.dynamic:
            ids.append(self.nodes[task.index].step_id)
        after = task.after
        while after:
            ids.append(after)
            after = self.tasks[after].after
        return ids, task.index + (2 if task.dynamic else 1)

    def is_last(self, index: int) -> bool:
        return index == len(self.nodes) - 1


def handoff_id(step: PlannedTask) -> str:
    """The id of a step inserted by ``step``'s handoff: ``step_3.h1``, then ``step_3.h2``."""
    if step.dynamic:
        base, _, n = step.step_id.rpartition(".h")
        return f"{base}.h{int(n) + 1}"
    return f"{step.step_id}.h1"


def frontier(
    plan: Plan,
    completed: set[str],
    inserted: list[PlannedTask],
    taken: dict[str, list[str]] | None = None,
) -> str | None:
    """The first step (top-level, inserted, or on the way taken through a branch: ``taken``)
    that has not completed: where to go on from."""
    by_node: dict[int, list[PlannedTask]] = {}
    for task in sorted(inserted, key=lambda t: int(t.step_id.rpartition(".h")[2])):
        by_node.setdefault(task.index, []).append(task)
    for node in plan.nodes:
        if node.step_id not in completed:
            return node.step_id
        for sid in (taken or {}).get(node.step_id, []):
            if sid not in completed:
                return sid
        for task in by_node.get(node.index, []):
            if task.step_id not in completed:
                return task.step_id
    return None
