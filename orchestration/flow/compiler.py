"""A plan in, Celery signatures of references out: what each state change sends next.

Every signature is immutable and carries ``(workflow_id, step_id, run)`` only, so no
message grows with the workflow's state or with the rest of the workflow.

A sequential run is a chain of step tasks; a group is a chord: its members' tasks (a
branch sequence being a chain inside it), then ``baton.aggregate`` once every branch has
ended. The links are made by the commits rather than by Celery's chain callback and
chord counter: each step's commit sends its successor in the same atomic script
(``orchestration/flow/outbox.py``), and counts its group's ended branches in the state store, where
the results already are, so the last one sends the aggregate. Celery's own chord would
write every member's result a second time and count them in a key of its own.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, chain
from celery.canvas import Signature

from orchestration.definition.plan import (
    Node,
    Plan,
    PlannedBranch,
    PlannedGroup,
    PlannedMap,
    PlannedTask,
)
from orchestration.model.names import (
    AGGREGATE_TASK,
    BRANCH_TASK,
    CONTROL_QUEUE,
    FINISH_FAILURE_TASK,
    MAP_TASK,
    agent_queue,
)


@dataclass(frozen=True)
class Next:
    """What goes next: step messages now, and a group's aggregate once it joins."""

    sigs: list[Signature] = field(default_factory=list)
    group: str | None = None  # the group this starts, or (``joins``) whose branch this ends
    ends: list[str] = field(default_factory=list)  # the group's branches' last steps
    aggregate: Signature | None = None
    joins: bool = False  # a branch ended: its group's aggregate goes when it is the last
    workflow_id: str = ""  # (of a group's start: its members are sent in batches)
    run: int = 0


def step_signature(app: Celery, workflow_id: str, task: PlannedTask, run: int) -> Signature:
    # No Celery result is written: the state store holds the step's result.
    options: dict[str, Any] = {"queue": agent_queue(task.agent_id), "ignore_result": True}
    if task.timeout:
        options["soft_time_limit"] = task.timeout
    return app.signature(
        task.celery_name, args=(workflow_id, task.step_id, run), immutable=True, **options
    )


def control_signature(
    app: Celery, name: str, workflow_id: str, step_id: str, run: int, **kwargs: Any
) -> Signature:
    """A task of the engine's own, on the control queue (a map's start, a branch's choice)."""
    return app.signature(
        name,
        args=(workflow_id, step_id, run),
        kwargs=kwargs,
        immutable=True,
        queue=CONTROL_QUEUE,
        ignore_result=True,
    )


def map_signature(
    app: Celery, workflow_id: str, node: PlannedMap, run: int, reset: bool
) -> Signature:
    """What starts a map (or sends it on): its list is known only when it runs."""
    options = {"reset": True} if reset else {}
    return control_signature(app, MAP_TASK, workflow_id, node.step_id, run, **options)


def batch_signature(app: Celery, workflow_id: str, node: PlannedMap, run: int) -> Signature:
    """A message that runs the next batch of a map in line (it names no batch: the batch
    is taken when it starts, so the same message serves any)."""
    task = node.member
    options: dict[str, Any] = {"queue": agent_queue(task.agent_id), "ignore_result": True}
    if task.timeout:
        options["soft_time_limit"] = task.timeout * node.batch_size
    return app.signature(
        task.celery_name,
        args=(workflow_id, node.step_id, run),
        kwargs={"map_batch": True},
        immutable=True,
        **options,
    )


def aggregate_signature(app: Celery, workflow_id: str, group_id: str, run: int) -> Signature:
    return control_signature(app, AGGREGATE_TASK, workflow_id, group_id, run)


def start_messages(
    app: Celery,
    plan: Plan,
    workflow_id: str,
    node: Node,
    run: int,
    committed: Collection[str] = (),
    *,
    reset: bool = False,
) -> Next:
    """The messages that start ``node``: a step, a map's start, or a group's branches (each
    from its first step without a result: a group sent again resumes where its branches
    stand). ``reset``: a map is sent on after nothing ran for a while (the reaper)."""
    if isinstance(node, PlannedTask):
        return Next([step_signature(app, workflow_id, node, run)])
    if isinstance(node, PlannedMap):
        return Next([map_signature(app, workflow_id, node, run, reset)])
    if isinstance(node, PlannedBranch):
        return Next([control_signature(app, BRANCH_TASK, workflow_id, node.step_id, run)])
    assert isinstance(node, PlannedGroup)
    heads = [next((s for s in b if s not in committed), None) for b in node.branches]
    return Next(
        [step_signature(app, workflow_id, plan.tasks[h], run) for h in heads if h],
        group=node.step_id,
        ends=[b[-1] for b in node.branches],
        aggregate=aggregate_signature(app, workflow_id, node.step_id, run),
        workflow_id=workflow_id,
        run=run,
    )


def next_messages(app: Celery, plan: Plan, workflow_id: str, done: Node, run: int) -> Next:
    """What the commit of ``done`` (a step, or a group's aggregate) sends."""
    if isinstance(done, PlannedTask) and done.branch is not None:
        way = plan.branch(done.branch).way_of(done.step_id).steps
        pos = way.index(done.step_id)
        if pos + 1 < len(way):
            return Next([step_signature(app, workflow_id, plan.tasks[way[pos + 1]], run)])
        # The way's last step: the workflow goes on after the branch.
    if isinstance(done, PlannedTask) and done.group is not None:
        node = plan.group(done.group)
        branch = next(b for b in node.branches if done.step_id in b)
        pos = branch.index(done.step_id)
        if pos + 1 < len(branch):
            return Next([step_signature(app, workflow_id, plan.tasks[branch[pos + 1]], run)])
        return Next(
            group=node.step_id,
            ends=[b[-1] for b in node.branches],
            aggregate=aggregate_signature(app, workflow_id, node.step_id, run),
            joins=True,
        )
    nxt = done.index + 1
    if nxt >= plan.total_steps:
        return Next()
    return start_messages(app, plan, workflow_id, plan.nodes[nxt], run)


def compensation_signature(
    app: Celery, workflow_id: str, completed: list[PlannedTask], run: int
) -> Signature:
    """Compensations of ``completed`` in reverse order, then ``baton.finish_failure``."""
    sigs = [
        app.signature(
            f"{t.agent_id}.{t.compensation}",
            args=(workflow_id, t.step_id, run),
            kwargs={"compensate": True},
            immutable=True,
            queue=agent_queue(t.agent_id),
            ignore_result=True,
        )
        for t in reversed(completed)
    ]
    finish = app.signature(
        FINISH_FAILURE_TASK,
        args=(workflow_id, run),
        immutable=True,
        queue=CONTROL_QUEUE,
        ignore_result=True,
    )
    return chain(*sigs, finish)
