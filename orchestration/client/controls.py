"""Changing a workflow's course from the client: cancel, pause, resume, retry, rollback,
signals and what waits for them, and the limits every worker shares. Part of
:class:`~orchestration.client.WorkflowOrchestrator`, which holds the connections."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import Celery

from orchestration.definition.catalog import Catalog
from orchestration.definition.plan import PlannedTask
from orchestration.errors import LimitError, SignalError, SignalTooLarge
from orchestration.flow.dispatch import Dispatcher
from orchestration.flow.resume import commit_wait
from orchestration.model import WaitingStep, WorkflowStatus
from orchestration.model.bounds import iso_at, over_input_cap
from orchestration.model.limits import Limit, LimitValues
from orchestration.model.names import Event
from orchestration.model.waits import SUBFLOW_TASK, WAIT_AGENT, WaitParams, check_payload, child_id
from orchestration.settings import BatonSettings
from orchestration.state.limiter import BudgetUse, Limiter
from orchestration.state.scripts import SignalSpec
from orchestration.state.store import StateStore

S = WorkflowStatus


class Controls:
    """What changes a workflow's course (the orchestrator's connections, typed here)."""

    settings: BatonSettings
    registry: Catalog
    store: StateStore
    app: Celery
    dispatch: Dispatcher
    limiter: Limiter

    def cancel_workflow(self, workflow_id: str) -> None:
        """Stop for good: queued tasks are revoked; a running step's commit will be refused."""
        t = self.store.transition(
            workflow_id,
            [S.CREATED, S.RUNNING, S.PAUSED, S.WAITING],
            S.CANCELLED,
            event=Event.WORKFLOW_CANCELLED,
        )
        if t.outstanding:
            self.app.control.revoke(t.outstanding)
        for child in self._children(workflow_id, S.CREATED, S.RUNNING, S.PAUSED, S.WAITING):
            self.cancel_workflow(child)

    def pause_workflow(self, workflow_id: str) -> None:
        """Stop before the next step; steps already running finish and commit."""
        self.store.transition(
            workflow_id, [S.RUNNING, S.WAITING], S.PAUSED, event=Event.WORKFLOW_PAUSED
        )
        for child in self._children(workflow_id, S.RUNNING, S.WAITING):
            self.pause_workflow(child)

    def _children(self, workflow_id: str, *among: WorkflowStatus) -> list[str]:
        """Its sub-workflows whose status is one of ``among`` (cancel and pause reach them)."""
        return [c for c in self.store.children(workflow_id) if self.store.status_of(c) in among]

    def resume_workflow(self, workflow_id: str) -> None:
        """Continue a paused workflow from exactly where it stopped."""
        t = self.store.transition(
            workflow_id,
            [S.PAUSED],
            S.RUNNING,
            event=Event.WORKFLOW_RESUMED,
            clear_paused=True,
        )
        if t.paused_at:  # something stopped at the pause; else the in-flight step goes on
            self.dispatch.send_on(workflow_id, t.run)
        for child in self._children(workflow_id, S.PAUSED):
            self.resume_workflow(child)

    def retry_workflow(self, workflow_id: str) -> None:
        """Restart a failed workflow from its last good checkpoint: the steps committed there
        are not run again (those its saga undid, and the failed one, are)."""
        self.dispatch.retry(workflow_id)

    def rollback(self, workflow_id: str, to_version: int) -> None:
        """Restore checkpoint ``to_version`` of a stopped workflow; it is then ``paused``.

        ``to_version`` must be a checkpoint: 0 to the latest version (``get_checkpoints``);
        anything else is a ``WorkflowStateError`` naming the range, and nothing changes.

        Later versions stay readable (``get_context(id, version=N)``); ``resume_workflow``
        continues from the restored state.
        """
        self.store.restore(
            workflow_id,
            to_version,
            [S.FAILED, S.PAUSED, S.COMPLETED],
            S.PAUSED,
            event=Event.ROLLED_BACK,
            bump_run=True,
        )

    # ------------------------------------------------------------------ signals

    def signal(
        self,
        workflow_id: str,
        name: str,
        payload: Any = None,
        signal_id: str | None = None,
        *,
        by: str | None = None,
    ) -> str:
        """Send signal ``name`` to a workflow: its wait step's output is ``payload``.

        The payload is checked against the wait's schema first (``SignalError`` naming the
        field; nothing changes). If the workflow waits there, one script commits it (a
        checkpoint and a history entry with ``by`` and when) and sends the workflow on:
        returns ``"applied"``. If the wait is not reached yet, the signal is kept for it:
        ``"kept"``. The same ``signal_id`` again changes nothing: ``"duplicate"``. A name
        the workflow never waits for is refused.
        """
        if why := over_input_cap(payload, self.settings.max_input_bytes):
            raise SignalTooLarge(f"signal {name!r} refused: its payload is {why}")
        plan = self.store.plan(workflow_id)

        def waits_in(tasks: Iterable[PlannedTask]) -> dict[str, PlannedTask]:
            return {
                t.parameters["name"]: t
                for t in tasks
                if t.agent_id == WAIT_AGENT and t.parameters.get("name")
            }

        waits = waits_in(plan.tasks.values())
        if name not in waits:  # one its agents inserted at run time (WaitFor)?
            waits |= waits_in(self.store.inserted(workflow_id))
        if name not in waits:
            known = ", ".join(sorted(waits)) or "no signal at all"
            raise SignalError(
                f"workflow {workflow_id} never waits for {name!r} (it waits for {known})"
            )
        task = waits[name]
        check_payload(name, WaitParams.model_validate(task.parameters).payload_schema, payload)
        for _ in range(3):  # (a retry or rollback may change the run in between)
            run = self.store.run_of(workflow_id)
            parked = self.store.parked(workflow_id).get(task.step_id) or {}
            reply, _ = commit_wait(
                self.app, self.store, self.dispatch, workflow_id, task.step_id, run,
                SignalSpec(name=name, id=signal_id or "", by=by or ""),
                output=payload, since=parked.get("since"),
            )  # fmt: skip
            if reply.state != "stale":
                break
        outcomes = {"committed": "applied", "kept": "kept", "duplicate_signal": "duplicate"}
        if reply.state in outcomes:
            return outcomes[reply.state]
        why = {
            "duplicate": f"{name!r} was signalled already (its wait step has committed)",
            "already_signalled": f"a signal {name!r} is kept already, for when it is reached",
            "not_running": f"it is {reply.status}",
            "missing": "it does not exist",
        }.get(reply.state, reply.state)
        raise SignalError(f"signal {name!r} refused by workflow {workflow_id}: {why}")

    def waiting(self, limit: int = 200) -> list[WaitingStep]:
        """What each waiting workflow waits for (a signal or a time), since and until when."""
        out: list[WaitingStep] = []
        for wid in self.store.index.list_ids(limit):
            for step_id, w in self.store.parked(wid).items():
                child = self.store.task(wid, step_id).task_type == SUBFLOW_TASK
                out.append(
                    WaitingStep(
                        workflow_id=wid,
                        step_id=step_id,
                        name=w.get("name") or None,
                        since=w.get("since", ""),
                        until=iso_at(w["due_ms"] / 1000) if w.get("due_ms") and not child else None,
                        child=child_id(wid, step_id) if child else None,
                    )
                )
        return out

    # ------------------------------------------------------------------ limits

    def limits(self) -> list[BudgetUse]:
        """Each declared limit, its values now, and per budget (key): steps running under
        it, steps waiting for it, and when its rate admits the next."""
        return self.limiter.usage(self.registry.declared_limits())

    def set_limit(
        self, name: str, *, rate: str | None = None, concurrency: int | None = None
    ) -> LimitValues:
        """Change a limit for every worker at once, without restarting anything: ``rate``
        ``"120/m"`` (``"none"`` lifts it), ``concurrency`` 20 (0 lifts it)."""
        return self.limiter.set(self._limit(name), rate, concurrency)

    def reset_limit(self, name: str) -> bool:
        """Back to the values the agent declares; False if none were set."""
        return self.limiter.reset(self._limit(name).name)

    def _limit(self, name: str) -> Limit:
        declared = self.registry.declared_limits()
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none is declared"
            raise LimitError(f"no limit named {name!r} (limits: {known})")
        return declared[name]
