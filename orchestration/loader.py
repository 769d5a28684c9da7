"""Definitions in (dict, YAML/JSON file, model), a checked :class:`Plan` out.

Everything is checked here, against the agent registry, before a single Redis write:
a definition that fails raises :class:`DefinitionError` naming each offending field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from agents.registry import AgentRegistry
from orchestration.aggregate import aggregators
from orchestration.errors import BatonError, DefinitionError
from orchestration.models import STEP_GROUP, STEP_TASK, ParallelStep, TaskStep, WorkflowDefinition
from orchestration.plan import Plan, PlannedGroup, PlannedTask

DefinitionSource = WorkflowDefinition | dict[str, Any] | str | Path


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p in (STEP_TASK, STEP_GROUP, "TaskStep") or p.startswith("list["):
            continue  # union member names say nothing to a user
        else:
            out += f".{p}" if out else p
    return out


def _problems(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        where = _loc(err["loc"])
        out.append((f"{prefix}.{where}" if prefix and where else prefix or where, err["msg"]))
    return out


def read_definition(source: DefinitionSource) -> WorkflowDefinition:
    """Parse a definition from a model, a dict, or a ``.yaml``/``.yml``/``.json`` file."""
    if isinstance(source, WorkflowDefinition):
        return source
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise DefinitionError([(str(path), f"cannot read: {exc.strerror}")]) from None
        try:
            raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise DefinitionError(
                [(str(path), f"not valid {path.suffix[1:] or 'YAML'}: {exc}")]
            ) from None
        source = raw
    if not isinstance(source, dict):
        raise DefinitionError([("", f"a definition is a mapping, got {type(source).__name__}")])
    try:
        return WorkflowDefinition.model_validate(source)
    except ValidationError as exc:
        raise DefinitionError(_problems(exc)) from None


def _plan_task(
    step: TaskStep,
    where: str,
    step_id: str,
    index: int,
    reg: AgentRegistry,
    problems: list[tuple[str, str]],
    group: str | None = None,
    after: str | None = None,
) -> PlannedTask:
    params: dict[str, Any] = dict(step.parameters)
    try:
        task_type = reg.get_task(step.agent_id, step.task_type)
    except BatonError as exc:
        field = "agent_id" if step.agent_id not in reg else "task_type"
        problems.append((f"{where}.{field}", str(exc)))
    else:
        try:
            model: BaseModel = task_type.validate_params(step.parameters)
            params = model.model_dump(mode="json")
        except ValidationError as exc:
            problems.extend(_problems(exc, f"{where}.parameters"))
    return PlannedTask(
        step_id=step_id,
        index=index,
        agent_id=step.agent_id,
        task_type=step.task_type,
        output_key=step.output_key,
        parameters=params,
        group=group,
        after=after,
    )


def compile_plan(definition: WorkflowDefinition, reg: AgentRegistry) -> Plan:
    """Check a parsed definition against the registry and assign step ids."""
    problems: list[tuple[str, str]] = []
    nodes: list[PlannedTask | PlannedGroup] = []
    tasks: dict[str, PlannedTask] = {}
    for i, step in enumerate(definition.steps):
        sid = f"step_{i + 1}"
        where = f"steps[{i}]"
        if isinstance(step, TaskStep):
            node = _plan_task(step, where, sid, i, reg, problems)
            tasks[sid] = node
            nodes.append(node)
            continue
        assert isinstance(step, ParallelStep)
        if step.aggregate not in aggregators:
            known = ", ".join(sorted(aggregators))
            problems.append(
                (f"{where}.aggregate", f"unknown aggregator {step.aggregate!r} (known: {known})")
            )
        branches: list[list[str]] = []
        for b, branch in enumerate(step.parallel):
            seq = branch if isinstance(branch, list) else [branch]
            ids: list[str] = []
            for k, member in enumerate(seq):
                mid = f"{sid}.{b + 1}" + (f".{k + 1}" if isinstance(branch, list) else "")
                mwhere = f"{where}.parallel[{b}]" + (f"[{k}]" if isinstance(branch, list) else "")
                tasks[mid] = _plan_task(
                    member, mwhere, mid, i, reg, problems, group=sid, after=ids[-1] if ids else None
                )
                ids.append(mid)
            branches.append(ids)
        nodes.append(
            PlannedGroup(
                step_id=sid,
                index=i,
                branches=branches,
                output_key=step.output_key,
                aggregate=step.aggregate,
            )
        )
    seen: dict[str, str] = {}
    for where, key in definition.output_keys():
        if key in seen:
            problems.append((where, f"duplicate output_key {key!r} (first used at {seen[key]})"))
        seen.setdefault(key, where)
    if problems:
        raise DefinitionError(problems)
    return Plan(name=definition.name, description=definition.description, nodes=nodes, tasks=tasks)


def load_plan(source: DefinitionSource, reg: AgentRegistry) -> Plan:
    return compile_plan(read_definition(source), reg)
