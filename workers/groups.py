"""A parallel group's callback (``baton.aggregate``): once every branch has ended, sum the
members' results up with the group's aggregator and commit that as the group's step.
(A map's aggregate shares the lease, verdict and commit: ``workers/maps.py``.)"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime

from celery import Task

from orchestration.definition.plan import PlannedGroup, PlannedMap
from orchestration.flow.compiler import Next, next_messages
from orchestration.model import RunningStep, TaskResult, TaskStatus, WorkflowStatus, dumps, utcnow
from orchestration.model.aggregate import aggregators
from orchestration.model.names import AGGREGATOR_AGENT
from orchestration.state.commit import CommitRequest
from orchestration.state.decode import StepState
from orchestration.state.scripts import Outcome
from workers.engine import Engine
from workers.steps import outcome_word

log = logging.getLogger("baton.runner")
S = WorkflowStatus


def begin_aggregate(
    engine: Engine,
    ctask: Task,
    workflow_id: str,
    node: PlannedGroup | PlannedMap,
    run: int,
    owner: str,
    *,
    data_keys: list[str],
    results: list[str],
) -> StepState | None:
    """Take the lease of the group's (or map's) step to aggregate it; None: not now (a copy
    of this callback aggregates, or the workflow stopped)."""
    state = engine.store.begin_step(
        workflow_id,
        RunningStep(
            step_id=node.step_id,
            agent_id=AGGREGATOR_AGENT,
            task_type=f"aggregate.{node.aggregate}",
            started_at=utcnow(),
            worker=ctask.request.hostname,
        ),
        run,
        data_keys,
        results=results,
        owner=owner,
        lease_seconds=engine.lease_seconds,
        task_id=ctask.request.id,
    )
    if state.status == "leased":  # another copy of this callback is aggregating
        raise ctask.retry(countdown=engine.lease_seconds / 2, max_retries=None)
    return state if state.status == S.RUNNING else None


def verdict(node: PlannedGroup | PlannedMap, ok: int, total: int) -> str | None:
    """Why the group (or map) fails, given how many of its members completed; or None."""
    kind = "group" if isinstance(node, PlannedGroup) else "map"
    what = "members" if kind == "group" else "items"
    if node.on_failure == "fail" and ok < total:
        return f"{kind} {node.step_id}: {total - ok} of {total} {what} failed (on_failure: fail)"
    rate = ok / total if total else 1.0
    if node.min_success_rate is not None and rate < node.min_success_rate:
        return (
            f"{kind} {node.step_id}: success rate {rate:.2f} is below "
            f"min_success_rate {node.min_success_rate}"
        )
    return None


def commit_node(
    engine: Engine,
    ctask: Task,
    workflow_id: str,
    node: PlannedGroup | PlannedMap,
    run: int,
    result: TaskResult,
    output_json: str,
) -> None:
    """Commit a group's (or map's) result as its step, with what follows it; a failure
    fails the workflow through the saga."""
    plan = engine.store.plan(workflow_id)
    ok = result.status == TaskStatus.COMPLETED
    nxt = next_messages(engine.app, plan, workflow_id, node, run) if ok else Next()
    outcome: Outcome = "fail" if not ok else "complete" if plan.is_last(node.index) else "continue"
    request = CommitRequest(
        workflow_id=workflow_id, result=result, node=node.step_id, run=run, outcome=outcome,
        advance=True, output_json=output_json, task_id=ctask.request.id,
    )  # fmt: skip
    reply = engine.dispatch.commit(request, nxt)
    if reply.committed and reply.status == S.COMPENSATING:
        engine.saga.fail_workflow(workflow_id, run)


def run_aggregate(engine: Engine, ctask: Task, workflow_id: str, group_id: str, run: int) -> str:
    plan = engine.store.plan(workflow_id)
    node = plan.group(group_id)
    owner = f"aggregate:{uuid.uuid4().hex[:8]}"
    state = begin_aggregate(
        engine, ctask, workflow_id, node, run, owner,
        data_keys=[k for m in node.member_ids if (k := plan.tasks[m].output_key)],
        results=node.member_ids,
    )  # fmt: skip
    if state is None:
        return outcome_word("skipped")
    started_at = utcnow()
    members = [state.results.get(sid) for sid in node.member_ids]
    if any(m is None for m in members):
        # A superseded chord (the group was re-dispatched on resume): the newer one aggregates.
        log.info("aggregate of %s %s skipped: members still missing", workflow_id, group_id)
        engine.store.lease(workflow_id, group_id, owner, 0, release=True)
        return outcome_word("skipped")
    got = [m for m in members if m is not None]
    t0 = time.perf_counter()
    summary = aggregators[node.aggregate](got, _wall_time(got))
    ok_count = sum(m.status == TaskStatus.COMPLETED for m in got)
    error = verdict(node, ok_count, len(got))
    result = TaskResult(
        task_id=f"{workflow_id}:{group_id}",
        agent_id=AGGREGATOR_AGENT,
        status=TaskStatus.COMPLETED if error is None else TaskStatus.FAILED,
        result=summary,
        error=error,
        execution_time=time.perf_counter() - t0,
        metadata={"task_type": f"aggregate.{node.aggregate}", "members": len(got)},
        step_id=group_id,
        task_type=f"aggregate.{node.aggregate}",
        output_key=node.output_key,
        started_at=started_at,
        finished_at=utcnow(),
        worker=ctask.request.hostname,
    )
    commit_node(engine, ctask, workflow_id, node, run, result, dumps(summary))
    return outcome_word("completed" if error is None else "failed", error)


def _wall_time(results: list[TaskResult]) -> float:
    """The group's wall time: first member start to last member finish."""
    stamps = [(r.started_at, r.finished_at) for r in results if r.started_at and r.finished_at]
    if not stamps:
        return 0.0
    start = min(datetime.fromisoformat(s) for s, _ in stamps)
    end = max(datetime.fromisoformat(f) for _, f in stamps)
    return (end - start).total_seconds()
