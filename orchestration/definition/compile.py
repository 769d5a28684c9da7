"""Checking a definition into a :class:`Plan`, against the agents' catalog, before a single
Redis write: agents and task types exist, parameters fit their models, every key a step
reads is produced by an earlier step, every way of a branch and every sub-workflow is a
workflow of its own. A definition that fails raises :class:`DefinitionError` naming each
offending field. One step's checks, and a run-time handoff's, are ``check.py``'s.
"""

from __future__ import annotations

from typing import Any

from orchestration.definition.catalog import Catalog
from orchestration.definition.check import (
    Keys,
    check_aggregate,
    check_path,
    plan_task,
)
from orchestration.definition.plan import (
    Node,
    Plan,
    PlannedBranch,
    PlannedCase,
    PlannedGroup,
    PlannedMap,
    PlannedTask,
)
from orchestration.definition.read import DefinitionSource, Problems, read_definition
from orchestration.errors import DefinitionError
from orchestration.model import (
    BranchStep,
    MapStep,
    ParallelStep,
    TaskStep,
    WhenStep,
    WorkflowDefinition,
)
from orchestration.model.waits import SUBFLOW_TASK, WAIT_AGENT

#: What a planned group or map takes as written from its step.
GROUP_SETTINGS = {"output_key", "aggregate", "on_failure", "min_success_rate"}


def plan_step(
    step: TaskStep, where: str, step_id: str, index: int, reg: Catalog, problems: Problems,
    available: set[str], keys: Keys, *, way: str | None = None, group: str | None = None,
    after: str | None = None, branch: str | None = None,
) -> tuple[PlannedTask, set[str]]:  # fmt: skip
    """Check a task step where it stands (top level, in a group, on a branch's ``way``), a
    sub-workflow step as a workflow of its own. Returns it and the keys it makes: its
    output_key, a sub-workflow's outputs."""
    made: set[str] = set()
    if (step.agent_id, step.task_type) == (WAIT_AGENT, SUBFLOW_TASK):
        made = plan_subflow(step.parameters, where, reg, problems, available, keys, way)
        if isinstance(step.parameters.get("workflow"), str):  # (named: not registered)
            step = step.model_copy(update={"parameters": {**step.parameters, "workflow": {}}})
    planned = plan_task(
        step, where, step_id, index, reg, problems, available,
        group=group, after=after, branch=branch,
    )  # fmt: skip
    if step.output_key:
        keys.add(f"{where}.output_key", step.output_key, way)
        made.add(step.output_key)
    return planned, made


def plan_map(
    step: MapStep,
    where: str,
    step_id: str,
    index: int,
    reg: Catalog,
    problems: Problems,
    available: set[str],
) -> PlannedMap:
    """Check a map: its task as a step's, ``over`` as a path into an earlier output."""
    check_aggregate(step.aggregate, where, problems)
    over_key, over_path = check_path(step.map.over, f"{where}.map.over", available, problems)
    # Each item loads what the task reads (or context_keys), else all but the list itself:
    # a 100,000-item list is read once, by the map, not once per item.
    member = plan_task(
        step.map.as_task(), f"{where}.map", step_id, index, reg, problems, available, group=None
    )
    if member.context_keys is None:
        member = member.model_copy(
            update={"context_keys": sorted(available - {over_key}), "output_key": None}
        )
    return PlannedMap(
        **step.model_dump(include={*GROUP_SETTINGS, "batch_size", "max_concurrency"}),
        step_id=step_id, index=index, member=member, over_key=over_key, over_path=over_path,
    )  # fmt: skip


def plan_branch(
    step: BranchStep | WhenStep,
    where: str,
    step_id: str,
    index: int,
    reg: Catalog,
    problems: Problems,
    available: set[str],
    tasks: dict[str, PlannedTask],
    keys: Keys,
) -> tuple[PlannedBranch, set[str]]:
    """Check a branch: its path, and every way through it as a sequence of steps. Returns
    it and the keys every way makes (what later steps may read, whichever runs)."""
    if isinstance(step, BranchStep):
        path, field = step.branch.on, f"{where}.branch.on"
        tests = [(name, name, True) for name in step.branch.cases]
    else:
        path, field = step.when.path, f"{where}.when.path"
        tests = [("then", step.when.equals, False)]
    key, inner = check_path(path, field, available, problems)
    ways: list[PlannedCase] = []
    made: list[set[str]] = []
    for n, (way, steps) in enumerate(step.paths(), start=1):
        ids: list[str] = []
        seen = set(available)
        for k, member in enumerate(steps):
            mid = f"{step_id}.{n}.{k + 1}"
            tasks[mid], makes = plan_step(
                member, f"{where}.{way}[{k}]", mid, index, reg, problems, seen, keys,
                way=f"{index}:{way}", after=ids[-1] if ids else None, branch=step_id,
            )  # fmt: skip
            ids.append(mid)
            seen |= makes
        made.append(seen - available)
        name, equals, loose = (
            tests[n - 1] if n <= len(tests) else (way.rpartition(".")[2], None, False)
        )
        ways.append(PlannedCase(name=name, equals=equals, loose=loose, steps=ids))
    default = ways.pop() if len(ways) > len(tests) else None
    if default is not None and not default.steps:
        default = None  # no default: a value no case names takes no way
    planned = PlannedBranch(
        step_id=step_id, index=index, on_key=key, on_path=inner, cases=ways, default=default
    )
    return planned, set.intersection(*made) if made else set()


def plan_subflow(
    params: dict[str, Any],
    where: str,
    reg: Catalog,
    problems: Problems,
    available: set[str],
    keys: Keys,
    way: str | None = None,
) -> set[str]:
    """Check a sub-workflow step: the child as a workflow of its own (its inputs are its
    first keys), its inputs' paths, its outputs. Returns the parent keys it makes."""
    child = params.get("workflow")
    if isinstance(child, str):
        problems.append(
            (f"{where}.workflow", f"no workflow is registered as {child!r} (register it with "
             "orchestrator.register_workflow or baton register FILE)")
        )  # fmt: skip
        return set()
    inputs: dict[str, str] = params.get("inputs") or {}
    outputs: dict[str, str] = params.get("outputs") or {}
    for key, path in inputs.items():
        check_path(path, f"{where}.inputs.{key}", available, problems)
    for parent_key in outputs:
        here = f"{where}.outputs.{parent_key}"
        if keys.add(here, parent_key, way, output_key=False) and parent_key in available:
            problems.append((here, f"{parent_key!r} is already in use"))  # (an input)
    try:
        _, made = _compile(read_definition(child or {}), reg, initial=set(inputs))
    except DefinitionError as exc:
        problems.extend(
            (f"{where}.workflow.{w}" if w else f"{where}.workflow", m) for w, m in exc.problems
        )
        return set(outputs)
    made |= set(inputs)
    for parent_key, child_key in outputs.items():
        if child_key not in made:
            problems.append(
                (f"{where}.outputs.{parent_key}", f"the sub-workflow makes no {child_key!r} "
                 f"(it makes: {', '.join(sorted(made)) or 'nothing'})")
            )  # fmt: skip
    return set(outputs)


def compile_plan(
    definition: WorkflowDefinition, reg: Catalog, *, initial: set[str] | None = None
) -> Plan:
    """Check a parsed definition against the registry and the data flow; assign step ids.
    ``initial``: the keys its shared_data holds from the start (a sub-workflow's inputs)."""
    return _compile(definition, reg, initial=initial)[0]


def _compile(
    definition: WorkflowDefinition, reg: Catalog, *, initial: set[str] | None = None
) -> tuple[Plan, set[str]]:
    """:func:`compile_plan`, and every key the workflow's steps make (on any way)."""
    problems: Problems = []
    keys = Keys(problems)
    nodes: list[Node] = []
    tasks: dict[str, PlannedTask] = {}
    available: set[str] = set(initial or ())
    for i, step in enumerate(definition.steps):
        sid = f"step_{i + 1}"
        where = f"steps[{i}]"
        if isinstance(step, TaskStep):
            node, made = plan_step(step, where, sid, i, reg, problems, available, keys)
            tasks[sid] = node
            nodes.append(node)
            available |= made
            continue
        if isinstance(step, MapStep):
            mapped = plan_map(step, where, sid, i, reg, problems, available)
            nodes.append(mapped)
            if step.output_key:
                keys.add(f"{where}.output_key", step.output_key)
                available.add(step.output_key)
            continue
        if isinstance(step, BranchStep | WhenStep):
            branched, produced_on_every_way = plan_branch(
                step, where, sid, i, reg, problems, available, tasks, keys
            )
            nodes.append(branched)
            available |= produced_on_every_way
            continue
        assert isinstance(step, ParallelStep)
        check_aggregate(step.aggregate, where, problems)
        branches: list[list[str]] = []
        produced: set[str] = set()
        for b, branch in enumerate(step.parallel):
            seq = branch if isinstance(branch, list) else [branch]
            ids: list[str] = []
            seen = set(available)  # members of a group never see each other's outputs
            for k, member in enumerate(seq):
                suffix = f".{k + 1}" if isinstance(branch, list) else ""
                mwhere = f"{where}.parallel[{b}]" + (f"[{k}]" if isinstance(branch, list) else "")
                mid = f"{sid}.{b + 1}{suffix}"
                tasks[mid], made = plan_step(
                    member, mwhere, mid, i, reg, problems, seen, keys,
                    group=sid, after=ids[-1] if ids else None,
                )  # fmt: skip
                ids.append(mid)
                seen |= made
                produced |= made
            branches.append(ids)
        if step.output_key:
            keys.add(f"{where}.output_key", step.output_key)
            produced.add(step.output_key)
        available |= produced
        nodes.append(
            PlannedGroup(
                **step.model_dump(include=GROUP_SETTINGS), step_id=sid, index=i, branches=branches
            )
        )
    seen_waits: dict[str, str] = {}
    for t in tasks.values():  # a signal names one wait
        name = t.parameters.get("name") if t.agent_id == WAIT_AGENT else None
        if name is not None:
            if name in seen_waits:
                problems.append(
                    (t.step_id, f"wait_for {name!r} twice (also at {seen_waits[name]})")
                )
            seen_waits.setdefault(name, t.step_id)
    if problems:
        raise DefinitionError(problems)
    plan = Plan(
        name=definition.name,
        description=definition.description,
        nodes=nodes,
        tasks=tasks,
        max_handoffs=definition.max_handoffs,
        deadline_seconds=definition.deadline_seconds,
    )
    return plan, set(keys.first)


def load_plan(source: DefinitionSource, reg: Catalog) -> Plan:
    return compile_plan(read_definition(source), reg)
