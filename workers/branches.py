"""A branch's choice (``baton.branch``, on the control queue): read the value at its path,
take the first case it matches (else the default, else none), and commit that choice as
the branch's step, in the same script as the first message of the way taken.

The steps on the ways not taken are committed as ``skipped``; progress counts only the
steps on the way taken. No code is evaluated: a path into shared_data and literals.
"""

from __future__ import annotations

import json
from typing import Any

from celery import Task

from orchestration.definition.plan import PlannedBranch
from orchestration.flow.compiler import Next, next_messages, step_signature
from orchestration.model import TaskResult, TaskStatus, WorkflowStatus, utcnow
from orchestration.model.names import AGGREGATOR_AGENT
from orchestration.state.commit import CommitRequest
from orchestration.state.scripts import Outcome
from workers.engine import Engine
from workers.steps import outcome_word

S = WorkflowStatus


def value_at(value: Any, path: list[str]) -> Any:
    """The value at ``path`` (keys, or list positions), or None where there is none."""
    for part in path:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def run_branch(engine: Engine, ctask: Task, workflow_id: str, branch_id: str, run: int) -> str:
    store = engine.store
    plan = store.plan(workflow_id)
    node: PlannedBranch = plan.branch(branch_id)
    raw = store.redis.hget(store.keys(workflow_id).data, node.on_key)
    value = value_at(json.loads(raw), node.on_path) if raw is not None else None
    way = node.choose(value)
    taken = way.steps if way else []
    now = utcnow()
    skipped = [
        TaskResult(
            task_id=f"{workflow_id}:{sid}",
            agent_id=plan.tasks[sid].agent_id,
            status=TaskStatus.SKIPPED,
            step_id=sid,
            task_type=plan.tasks[sid].task_type,
            metadata={"branch": branch_id, "way": other.name},
            finished_at=now,
        )  # fmt: skip
        for other in node.ways
        if other is not way
        for sid in other.steps
    ]
    result = TaskResult(
        task_id=f"{workflow_id}:{branch_id}", agent_id=AGGREGATOR_AGENT,
        status=TaskStatus.COMPLETED, step_id=branch_id, task_type="branch",
        result={"on": node.on, "value": value, "taken": way.name if way else None,
                "steps": taken},
        metadata={"task_type": "branch"}, started_at=now, finished_at=now,
        worker=ctask.request.hostname,
    )  # fmt: skip
    if taken:
        nxt = Next([step_signature(engine.app, workflow_id, plan.tasks[taken[0]], run)])
    else:
        nxt = next_messages(engine.app, plan, workflow_id, node, run)
    outcome: Outcome = "complete" if not taken and plan.is_last(node.index) else "continue"
    request = CommitRequest(
        workflow_id=workflow_id, result=result, node=branch_id, run=run, outcome=outcome,
        task_id=ctask.request.id, add_steps=len(taken) - 1, skipped=tuple(skipped),
    )  # fmt: skip
    reply = engine.dispatch.commit(request, nxt)
    if not reply.committed:
        return outcome_word(reply.state)
    return outcome_word(f"took {way.name if way else 'no way'}")
