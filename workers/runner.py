"""What a worker does with one step message: load, run the agent, commit, hand on.

The message holds ``(workflow_id, step_id)``. The runner loads the plan (cached) and the
state (one round trip), runs the agent function, validates and commits the result in one
atomic script, and — when the step ends a segment — dispatches the next segment. Agent
failures never escape as worker crashes: they become a FAILED ``TaskResult``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery

from agents.base import StepInput
from agents.registry import AgentRegistry
from orchestration.aggregate import aggregators
from orchestration.compiler import dispatch
from orchestration.errors import StepFailed
from orchestration.models import Envelope, RunningStep, TaskResult, TaskStatus, utcnow
from orchestration.plan import Plan
from orchestration.store import Outcome, StateStore, dumps

log = logging.getLogger("baton.runner")

AGGREGATOR_AGENT = "baton"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Engine:
    """Per-process engine: one Celery app, one state store, the agent registry."""

    app: Celery
    store: StateStore
    registry: AgentRegistry

    def _outcome(self, plan: Plan, index: int, ok: bool, top_level: bool) -> Outcome:
        if not top_level:
            return "continue"
        if not ok:
            return "fail"
        return "complete" if plan.is_last(index) else "continue"

    def _hand_on(self, plan: Plan, workflow_id: str, index: int) -> None:
        nxt = index + 1
        if nxt < plan.total_steps and plan.starts_segment(nxt):
            dispatch(self.app, plan, workflow_id, nxt)

    def run_dispatch(self, workflow_id: str, index: int) -> None:
        """Publish a segment on a client's behalf, if the workflow still runs."""
        if self.store.status_of(workflow_id) == "running":
            dispatch(self.app, self.store.plan(workflow_id), workflow_id, index)

    def run_step(self, workflow_id: str, step_id: str, worker: str | None = None) -> dict[str, Any]:
        plan = self.store.plan(workflow_id)
        task = plan.tasks[step_id]
        started_at = utcnow()
        state = self.store.begin_step(
            workflow_id,
            RunningStep(
                step_id=step_id,
                agent_id=task.agent_id,
                task_type=task.task_type,
                started_at=started_at,
                worker=worker,
            ),
        )
        if state.status != "running":
            log.info("skip %s %s: workflow is %s", workflow_id, step_id, state.status)
            return Envelope(workflow_id=workflow_id, step_id=step_id, status="skipped").model_dump()

        t0 = time.perf_counter()
        output: Any = None
        output_json = ""
        error: str | None = None
        upstream = state.results.get(task.after) if task.after else None
        if task.after and (upstream is None or upstream.status != TaskStatus.COMPLETED):
            error = f"skipped: upstream step {task.after} did not complete"
        else:
            try:
                tt = self.registry.get_task(task.agent_id, task.task_type)
                step_input: StepInput[Any] = StepInput(
                    workflow_id=workflow_id,
                    step_id=step_id,
                    agent_id=task.agent_id,
                    task_type=task.task_type,
                    parameters=tt.validate_params(task.parameters),
                    shared_data=state.shared_data,
                    previous_results=list(state.results.values()),
                )
                output = tt.run(step_input)
                output_json = dumps(output)
            except Exception as exc:  # an agent's failure is its step's result, not the worker's
                log.warning(
                    "step %s of %s failed: %s", step_id, workflow_id, _describe(exc), exc_info=True
                )
                error, output, output_json = _describe(exc), None, ""
        elapsed = time.perf_counter() - t0
        ok = error is None
        result = TaskResult(
            task_id=f"{workflow_id}:{step_id}",
            agent_id=task.agent_id,
            status=TaskStatus.COMPLETED if ok else TaskStatus.FAILED,
            result=output if ok else None,
            error=error,
            execution_time=elapsed,
            metadata={"task_type": task.task_type, "parallel": not task.top_level},
            step_id=step_id,
            task_type=task.task_type,
            output_key=task.output_key,
            started_at=started_at,
            finished_at=utcnow(),
            worker=worker,
        )
        # The output is serialized once, above; the TaskResult copy carries it too.
        outcome = self.store.commit(
            workflow_id,
            result,
            output_key=task.output_key,
            output_json=output_json or "null",
            advance=task.top_level and ok,
            outcome=self._outcome(plan, task.index, ok, task.top_level),
        )
        if not outcome.committed:
            log.info("step %s of %s not committed: %s", step_id, workflow_id, outcome.state)
            return Envelope(
                workflow_id=workflow_id,
                step_id=step_id,
                status="duplicate" if outcome.state == "duplicate" else "skipped",
            ).model_dump()
        if task.top_level and not ok:
            # Stop the chain: the failure is already committed and the workflow FAILED.
            raise StepFailed(f"workflow {workflow_id} failed at {step_id}: {error}")
        if task.top_level:
            self._hand_on(plan, workflow_id, task.index)
        return Envelope(
            workflow_id=workflow_id,
            step_id=step_id,
            status="completed" if ok else "failed",
            error=error,
        ).model_dump()

    def run_aggregate(
        self, workflow_id: str, group_id: str, worker: str | None = None
    ) -> dict[str, Any]:
        plan = self.store.plan(workflow_id)
        node = plan.group(group_id)
        started_at = utcnow()
        state = self.store.begin_step(
            workflow_id,
            RunningStep(
                step_id=group_id,
                agent_id=AGGREGATOR_AGENT,
                task_type=f"aggregate.{node.aggregate}",
                started_at=started_at,
                worker=worker,
            ),
        )
        if state.status != "running":
            return Envelope(
                workflow_id=workflow_id, step_id=group_id, status="skipped"
            ).model_dump()
        t0 = time.perf_counter()
        members: list[TaskResult] = []
        for sid in node.member_ids:
            found = state.results.get(sid)
            if found is None:
                task = plan.tasks[sid]
                found = TaskResult(
                    task_id=f"{workflow_id}:{sid}",
                    agent_id=task.agent_id,
                    status=TaskStatus.FAILED,
                    error="no result was recorded",
                    step_id=sid,
                    task_type=task.task_type,
                )
            members.append(found)
        stamps = [(m.started_at, m.finished_at) for m in members if m.started_at and m.finished_at]
        wall = _wall_time(stamps)
        output = aggregators[node.aggregate](members, wall)
        result = TaskResult(
            task_id=f"{workflow_id}:{group_id}",
            agent_id=AGGREGATOR_AGENT,
            status=TaskStatus.COMPLETED,
            result=output,
            execution_time=time.perf_counter() - t0,
            metadata={"task_type": f"aggregate.{node.aggregate}", "members": len(members)},
            step_id=group_id,
            task_type=f"aggregate.{node.aggregate}",
            output_key=node.output_key,
            started_at=started_at,
            finished_at=utcnow(),
            worker=worker,
        )
        outcome = self.store.commit(
            workflow_id,
            result,
            output_key=node.output_key,
            output_json=dumps(output),
            advance=True,
            outcome=self._outcome(plan, node.index, True, True),
        )
        if outcome.committed:
            self._hand_on(plan, workflow_id, node.index)
        return Envelope(
            workflow_id=workflow_id,
            step_id=group_id,
            status="completed" if outcome.committed else "duplicate",
        ).model_dump()


def _wall_time(stamps: list[tuple[str, str]]) -> float:
    """The group's wall time: first member start to last member finish."""
    if not stamps:
        return 0.0
    start = min(datetime.fromisoformat(s) for s, _ in stamps)
    end = max(datetime.fromisoformat(f) for _, f in stamps)
    return (end - start).total_seconds()
