"""Committing a parked wait: the output a signal (or its timer) gives it, and what comes
next, in one script (``commit.lua`` with a ``SignalSpec``). Used by the client's
``signal`` and by the workers' timer sweep alike."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import Celery

from orchestration.flow.compiler import Next, next_messages
from orchestration.flow.dispatch import Dispatcher
from orchestration.model import TaskResult, TaskStatus, dumps, utcnow
from orchestration.state.commit import CommitRequest
from orchestration.state.scripts import CommitReply, Outcome, SignalSpec
from orchestration.state.store import StateStore


def commit_wait(
    app: Celery,
    store: StateStore,
    dispatch: Dispatcher,
    workflow_id: str,
    step_id: str,
    run: int,
    signal: SignalSpec,
    *,
    output: Any = None,
    error: str | None = None,
    since: str | None = None,
    outputs: dict[str, Any] | None = None,
) -> tuple[CommitReply, Next]:
    """Commit the wait ``step_id`` with ``output`` (or fail it with ``error``) and send the
    workflow on; if the wait is not parked yet, the script keeps the signal for it."""
    plan = store.plan(workflow_id)
    task = store.task(workflow_id, step_id)
    ok = error is None
    started = since or utcnow()
    waited = (datetime.fromisoformat(utcnow()) - datetime.fromisoformat(started)).total_seconds()
    result = TaskResult(
        task_id=f"{workflow_id}:{step_id}",
        agent_id=task.agent_id,
        status=TaskStatus.COMPLETED if ok else TaskStatus.FAILED,
        result=output if ok else None,
        error=error,
        execution_time=max(0.0, waited),
        metadata={
            "task_type": task.task_type,
            "parallel": task.group is not None,
            "attempt": 1,
            "signal": signal.name or None,
            "by": signal.by or None,
            "timer": signal.timer,
        },
        step_id=step_id,
        task_type=task.task_type,
        output_key=task.output_key,
        started_at=started,
        finished_at=utcnow(),
    )
    top = task.group is None
    nxt = next_messages(app, plan, workflow_id, task, run) if ok or not top else Next()
    last = plan.ends_workflow(task)
    outcome: Outcome = "fail" if top and not ok else "complete" if ok and last else "continue"
    reply = dispatch.commit(
        CommitRequest(
            workflow_id=workflow_id, result=result, node=step_id, run=run, outcome=outcome,
            advance=top, output_json=dumps(output) if ok else "null", signal=signal,
            outputs=outputs or {},
        ),
        nxt,
    )  # fmt: skip
    return reply, nxt
