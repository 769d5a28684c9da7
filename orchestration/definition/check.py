"""Checking one step where it stands: a task step against the agents' catalog (the agent
and task type exist, its parameters fit their model, every key it reads is available),
the keys steps make (one key, one step), a group's aggregator, a path into an output,
and a run-time handoff, checked as a definition's step is."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from orchestration.definition.catalog import Catalog
from orchestration.definition.plan import (
    PlannedTask,
    handoff_id,
)
from orchestration.definition.read import Problems, problems_of
from orchestration.errors import BatonError, HandoffRefused
from orchestration.model import (
    TaskStep,
)
from orchestration.model.aggregate import aggregators

#: What a planned task takes as written from its step.
TASK_SETTINGS = {
    "agent_id", "task_type", "output_key", "retries", "retry_backoff", "retry_backoff_max",
    "timeout",
}  # fmt: skip


def plan_task(
    step: TaskStep,
    where: str,
    step_id: str,
    index: int,
    reg: Catalog,
    problems: Problems,
    available: set[str],
    *,
    group: str | None = None,
    after: str | None = None,
    branch: str | None = None,
    dynamic: bool = False,
) -> PlannedTask:
    """Check one task step against the registry and the keys available to it."""
    params: dict[str, Any] = dict(step.parameters)
    compensation = None
    # What the step loads: its context_keys, else the keys its task type reads, else all.
    context_keys = step.context_keys
    try:
        task_type = reg.get_task(step.agent_id, step.task_type)
    except BatonError as exc:
        field = "agent_id" if step.agent_id not in reg else "task_type"
        problems.append((f"{where}.{field}", str(exc)))
    else:
        compensation = task_type.compensation
        try:
            model: BaseModel = task_type.validate_params(step.parameters)
        except ValidationError as exc:
            problems.extend(problems_of(exc, f"{where}.parameters"))
        else:
            params = model.model_dump(mode="json")
            reads = task_type.reads_for(model)
            check_reads(step, where, reads, available, problems)
            if context_keys is None and reads:
                context_keys = reads
    return PlannedTask(
        **step.model_dump(include=TASK_SETTINGS),
        step_id=step_id, index=index, parameters=params, group=group, after=after,
        branch=branch, context_keys=context_keys, compensation=compensation, dynamic=dynamic,
    )  # fmt: skip


class Keys:
    """Every key a step makes, where it is made and on which way of a branch (``i:way``):
    one key, one step, except on two ways of one branch (only one of them runs)."""

    def __init__(self, problems: Problems) -> None:
        self.problems = problems
        self.first: dict[str, tuple[str, str | None]] = {}

    def add(self, where: str, key: str, way: str | None = None, *, output_key: bool = True) -> bool:
        """Record ``key`` made at ``where``; False (a problem named) if another step makes it."""
        if key in self.first:
            first, first_way = self.first[key]
            alternatives = (
                way and first_way and way != first_way
                and way.split(":")[0] == first_way.split(":")[0]
            )  # fmt: skip
            if not alternatives:
                self.problems.append(
                    (where, f"duplicate output_key {key!r} (first used at {first})")
                    if output_key
                    else (where, f"{key!r} is already in use (first used at {first})")
                )
                return False
        self.first.setdefault(key, (where, way))
        return True


def not_produced(key: str, available: set[str], path: str | None = None) -> str:
    """The problem of reading ``key`` (by ``path`` into it) that no earlier step writes."""
    have = ", ".join(sorted(available)) or "nothing yet"
    where = f"{path!r}: " if path is not None else ""
    return f"{where}{key!r} is not produced by any earlier step (available: {have})"


def check_path(
    path: str, field: str, available: set[str], problems: Problems
) -> tuple[str, list[str]]:
    """``split_path(path)``, and a problem at ``field`` if its key is no earlier output."""
    key, inner = split_path(path, available)
    if key not in available:
        problems.append((field, not_produced(key, available, path)))
    return key, inner


def check_reads(
    step: TaskStep, where: str, reads: list[str], available: set[str], problems: Problems
) -> None:
    for key in step.context_keys or []:
        if key not in available:
            problems.append((f"{where}.context_keys", not_produced(key, available)))
    for key in reads:
        if key not in available:
            have = ", ".join(sorted(available)) or "nothing yet"
            problems.append(
                (
                    where,
                    f"{step.agent_id}.{step.task_type} reads {key!r}, which no earlier step "
                    f"produces (available: {have})",
                )
            )
        elif step.context_keys is not None and key not in step.context_keys:
            problems.append(
                (f"{where}.context_keys", f"must include {key!r}, which the task reads")
            )


def check_aggregate(name: str, where: str, problems: Problems) -> None:
    if name not in aggregators:
        known = ", ".join(sorted(aggregators))
        problems.append((f"{where}.aggregate", f"unknown aggregator {name!r} (known: {known})"))


def split_path(path: str, available: set[str]) -> tuple[str, list[str]]:
    """``key.a.b`` into the output_key and the path inside it (a key may hold dots)."""
    if path in available:
        return path, []
    key, _, rest = path.partition(".")
    return key, [p for p in rest.split(".") if p]


def plan_handoff(
    step: PlannedTask, handoff: dict[str, Any], available: set[str], reg: Catalog
) -> PlannedTask:
    """Check a run-time handoff from ``step`` as a definition's step is checked at creation.

    ``handoff``: the new step's agent_id, task_type, parameters and output_key;
    ``available``: the keys shared_data will hold once ``step`` has committed.
    Raises ``HandoffRefused`` naming every problem.
    """
    where = f"handoff from {step.step_id} to {handoff['agent_id']}.{handoff['task_type']}"
    try:
        new = TaskStep.model_validate(handoff)
    except ValidationError as exc:
        raise HandoffRefused(where, problems_of(exc)) from None
    problems: Problems = []
    if step.group is not None or step.branch is not None:
        problems.append(("", "handoffs are allowed from top-level steps only"))
    if new.output_key and new.output_key in available:
        problems.append(("handoff.output_key", f"{new.output_key!r} is already in use"))
    planned = plan_task(
        new, "handoff", handoff_id(step), step.index, reg, problems, available, dynamic=True
    )
    if problems:
        raise HandoffRefused(where, problems)
    return planned
