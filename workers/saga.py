"""The saga: when a step fails its workflow, undo what completed, then restore the state.

Completed steps whose task type names a ``compensation`` are compensated in reverse
order (a chain of their compensation tasks, then ``baton.finish_failure`` on the control
queue); the state is then restored to the last version before the earliest undone step
began to commit, and the workflow is ``failed`` with a record of what was undone.
"""

from __future__ import annotations

import logging

from celery import Celery, Task

from agents.registry import AgentRegistry
from orchestration.flow.compiler import compensation_signature
from orchestration.model import CompensationOutcome, HistoryEntry, TaskStatus, WorkflowStatus
from orchestration.model.names import AGGREGATOR_AGENT, Event
from orchestration.state.store import StateStore

log = logging.getLogger("baton.saga")
S = WorkflowStatus


def describe(exc: BaseException) -> str:
    """An exception as a step's error reads: its type and message."""
    return f"{type(exc).__name__}: {exc}"


class Saga:
    def __init__(self, app: Celery, store: StateStore, registry: AgentRegistry) -> None:
        self.app, self.store, self.registry = app, store, registry

    def fail_workflow(self, workflow_id: str, run: int) -> None:
        """Compensate completed steps in reverse order, then restore the state."""
        to_undo = [
            self.store.task(workflow_id, sid)
            for sid, r in self.store.results(workflow_id).items()
            if r.status == TaskStatus.COMPLETED and r.agent_id != AGGREGATOR_AGENT
        ]
        to_undo = [t for t in to_undo if t.compensation]
        if to_undo:
            self.store.append_history(
                workflow_id,
                HistoryEntry(
                    event=Event.COMPENSATION_STARTED,
                    status=S.COMPENSATING,
                    changed=[t.step_id for t in reversed(to_undo)],
                ),
            )
            compensation_signature(self.app, workflow_id, to_undo, run).apply_async()
        else:
            self.finish_failure(workflow_id, run)

    def run_compensation(self, ctask: Task, workflow_id: str, step_id: str, run: int) -> None:
        """Run one step's compensation; its failure is recorded, the others still run."""
        task = self.store.task(workflow_id, step_id)
        state = self.store.read_state(workflow_id, task.context_keys)
        if state.status != S.COMPENSATING:
            return
        original = state.results.get(step_id)
        entry = {"step": step_id, "agent_id": task.agent_id, "task_type": task.compensation}
        try:
            tt = self.registry.get_task(task.agent_id, str(task.compensation))
            tt.run(
                tt.input_for(
                    workflow_id,
                    step_id,
                    task.parameters,
                    state.shared_data,
                    [original] if original else [],
                )
            )
        except Exception as exc:  # recorded; the other compensations still run
            log.warning("compensation of %s in %s failed: %s", step_id, workflow_id, describe(exc))
            self.store.append_history(
                workflow_id,
                HistoryEntry(event=Event.COMPENSATION_FAILED, error=describe(exc), **entry),
            )
        else:
            self.store.append_history(
                workflow_id,
                HistoryEntry(event=Event.STEP_COMPENSATED, status="compensated", **entry),
            )

    def finish_failure(self, workflow_id: str, run: int) -> None:
        """Restore the last consistent checkpoint and mark the workflow failed."""
        history = self.store.history(workflow_id)
        since = max((i for i, h in enumerate(history) if h.event == Event.STEP_FAILED), default=0)
        outcome = CompensationOutcome(
            compensated=[str(h.step) for h in history[since:] if h.event == Event.STEP_COMPENSATED],
            failures={
                str(h.step): str(h.error)
                for h in history[since:]
                if h.event == Event.COMPENSATION_FAILED
            },
        )
        failed_step = next(
            (h.step for h in reversed(history) if h.event == Event.STEP_FAILED), None
        )
        target = self._consistent_version(
            workflow_id, [*outcome.compensated, *outcome.failures], failed_step
        )
        outcome = outcome.model_copy(update={"restored_to_version": target})
        self.store.restore(
            workflow_id,
            target,
            [S.COMPENSATING],
            S.FAILED,
            event=Event.STATE_RESTORED,
            keep_failed=True,
            compensation=outcome,
        )

    def _consistent_version(self, workflow_id: str, undone: list[str], failed: str | None) -> int:
        """The version just before the earliest step the failure undoes began to commit."""
        versions = self.store.versions(workflow_id)
        plan = self.store.plan(workflow_id)

        def node_of(step_id: str) -> str:
            task = plan.tasks.get(step_id)
            return task.group if task is not None and task.group else step_id

        nodes = {node_of(s) for s in [*undone, *([failed] if failed else [])]}
        firsts = [
            v
            for field, v in versions.items()
            if field.startswith("r:")
            and any(field[2:] == n or field[2:].startswith(n + ".") for n in nodes)
        ]
        return min(firsts) - 1 if firsts else max(versions.values(), default=0)
