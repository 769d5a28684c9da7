"""What a worker does with one message: load, run the agent, commit, hand on.

A message holds ``(workflow_id, step_id, run)``. The runner loads the plan (cached) and
the state (one round trip), runs the agent function, validates and commits the result
with one compare-and-set script, which also sends what comes next (``workers/outbox.py``).
Agent failures never escape as worker crashes: they are retried as the step allows,
then become a FAILED ``TaskResult``; a failure that fails the workflow runs the saga
(compensations in reverse order, then a state restore).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Celery, Task
from pydantic import ValidationError

from agents.base import Handoff, StepInput, StepOutput, agent_queue
from agents.registry import AgentRegistry
from orchestration.aggregate import aggregators
from orchestration.compiler import (
    CONTROL_QUEUE,
    Next,
    after,
    compensation_signature,
    entry,
    step_signature,
)
from orchestration.errors import BatonError, StepFailed
from orchestration.models import (
    CompensationOutcome,
    HistoryEntry,
    RunningStep,
    TaskResult,
    TaskStatus,
    WorkflowStatus,
    utcnow,
)
from orchestration.plan import PlannedGroup, PlannedTask, frontier, handoff_id
from orchestration.store import Outcome, Outgoing, StateStore, StepState, dumps
from workers.outbox import Sender

log = logging.getLogger("baton.runner")

AGGREGATOR_AGENT = "baton"
BATCH = 100  # a big group's members are sent this many per script
S = WorkflowStatus


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def backoff(task: PlannedTask, attempt: int) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    delay = min(task.retry_backoff_max, task.retry_backoff * 2 ** (attempt - 1))
    return float(delay / 2 + random.uniform(0, delay / 2))


def _outcome(status: str, error: str | None = None) -> str:
    """What a step task returns to Celery (Flower shows it as the task's result): its
    outcome in a word, the error after it. Nothing reads it back: the state store holds
    the result, and the task's arguments already name the workflow and step. (Celery
    reprs the return value twice, in the worker's log line and its task-succeeded event:
    a word costs a fraction of a record.)"""
    return f"{status}: {error}" if error else status


class LeaseKeeper:
    """Renews the leases of the steps this process is running, so that a redelivered copy
    waits for them; one thread for the process, not one per step."""

    def __init__(self, store: StateStore, seconds: float) -> None:
        self.store, self.seconds = store, seconds
        self._held: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, workflow_id: str, step_id: str, owner: str) -> Iterator[None]:
        with self._lock:
            self._held[(workflow_id, step_id)] = owner
            if self._thread is None or not self._thread.is_alive():  # a fork has none
                self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop((workflow_id, step_id), None)

    def _run(self) -> None:
        tick = threading.Event()
        while not tick.wait(self.seconds / 3):
            with self._lock:
                held = list(self._held.items())
            for (workflow_id, step_id), owner in held:
                try:
                    if not self.store.lease(workflow_id, step_id, owner, self.seconds):
                        with self._lock:  # lost (its commit came, or another took it over)
                            if self._held.get((workflow_id, step_id)) == owner:
                                del self._held[(workflow_id, step_id)]
                except Exception as exc:  # Redis away for a moment: the next beat retries
                    log.warning("lease renewal for %s %s failed: %s", workflow_id, step_id, exc)


@dataclass
class Engine:
    """Per-process engine: one Celery app, one state store, the agent registry."""

    app: Celery
    store: StateStore
    registry: AgentRegistry
    lease_seconds: float = 30.0
    max_output_bytes: int = 64 * 2**20
    sender: Sender = field(init=False)
    leases: LeaseKeeper = field(init=False)

    def __post_init__(self) -> None:
        self.sender = Sender(self.app)
        self.leases = LeaseKeeper(self.store, self.lease_seconds)

    # ------------------------------------------------------------------ going on

    def outgoing(self, nxt: Next, parent_id: str | None = None) -> Outgoing:
        """``nxt``'s messages ready for a script to send (a group's aggregate with them).

        Of a big group only the first batch goes with the commit; ``sent`` sends the rest,
        so that workers start on the first members while the others are being encoded.
        """
        out = self.sender.outgoing(nxt.sigs[:BATCH], parent_id)
        if nxt.group and nxt.aggregate is not None and not nxt.joins:
            aggregate = self.sender.outgoing([nxt.aggregate], parent_id)
            out = replace(out, group=nxt.group, aggregate=aggregate)
        return out

    def sent(self, nxt: Next, aggregate_id: str = "", aggregate_message: str = "") -> None:
        """After a script sent ``nxt``'s first batch: publish it through Celery if the broker is
        not Redis, then send the group's other members, a batch per script.

        ``aggregate_id``: the script sent the group's aggregate too (armed when the group
        started, so this process did not build it: on Redis, ``aggregate_message`` is it)."""
        sigs = list(nxt.sigs[:BATCH])
        if aggregate_id and nxt.aggregate is not None and not self.sender.inline:
            sigs.append(nxt.aggregate.set(task_id=aggregate_id))
        self.sender.publish(sigs)
        if aggregate_message:
            self.sender.announce(aggregate_message)
        for start in range(BATCH, len(nxt.sigs), BATCH):
            batch = nxt.sigs[start : start + BATCH]
            out = self.sender.outgoing(batch)
            state, *_ = self.store.send(nxt.workflow_id, nxt.run, out, hold_at=nxt.group)
            if state != "ok":  # stopped meanwhile (paused, cancelled): resume sends the rest
                return
            self.sender.publish(batch)

    def next_step(self, workflow_id: str) -> str | None:
        """The first step (top-level or inserted) that has not completed."""
        return self._frontier(workflow_id)[0]

    def _frontier(self, workflow_id: str) -> tuple[str | None, dict[str, TaskResult]]:
        """``next_step``, and the results it was found from."""
        plan = self.store.plan(workflow_id)
        results = self.store.results(workflow_id)
        done = {s for s, r in results.items() if r.status == TaskStatus.COMPLETED}
        return frontier(plan, done, self.store.inserted(workflow_id)), results

    def queues_for(self, workflow_id: str, step_id: str) -> list[str]:
        """The queues the messages for ``step_id`` go to (a group's members and callback)."""
        plan = self.store.plan(workflow_id)
        node = next((n for n in plan.nodes if n.step_id == step_id), None)
        if isinstance(node, PlannedGroup):
            agents = {plan.tasks[m].agent_id for m in node.member_ids}
            return [*(agent_queue(a) for a in sorted(agents)), CONTROL_QUEUE]
        return [agent_queue(self.store.task(workflow_id, step_id).agent_id)]

    def go_on(self, workflow_id: str, run: int) -> str | None:
        """Send the workflow on from the first step that has not completed (resume, retry,
        the reaper); what was outstanding before is superseded (lost, or dropped on arrival).
        """
        nxt, results = self._frontier(workflow_id)
        if nxt is None:
            return None
        plan = self.store.plan(workflow_id)
        node = next((n for n in plan.nodes if n.step_id == nxt), None)
        what = entry(
            self.app, plan, workflow_id, node or self.store.task(workflow_id, nxt), run, results
        )
        state, *aggregate = self.store.send(
            workflow_id, run, self.outgoing(what), replace=True, ends=what.ends
        )
        if state == "ok":
            self.sent(what, *aggregate)
        return nxt

    # ------------------------------------------------------------------ steps

    def run_step(self, ctask: Task, workflow_id: str, step_id: str, run: int) -> str:
        plan = self.store.plan(workflow_id)
        task = self.store.task(workflow_id, step_id)
        worker = ctask.request.hostname
        owner = f"{worker}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this execution
        started_at = utcnow()
        running = RunningStep(
            step_id=step_id,
            agent_id=task.agent_id,
            task_type=task.task_type,
            started_at=started_at,
            worker=worker,
        )
        visible, inserted_before = plan.visible_results(task)
        state = self.store.begin_step(
            workflow_id,
            running,
            run,
            task.context_keys,
            results=visible,
            inserted_before=inserted_before,
            owner=owner,
            lease_seconds=self.lease_seconds,
            task_id=ctask.request.id,
        )

        def stop(status: str) -> str:
            log.info("step %s of %s not run: %s", step_id, workflow_id, status)
            return _outcome(status)

        if state.status == "committed":
            # Already committed (a redelivered message, or a group resumed): not run again.
            self.store.note(workflow_id, HistoryEntry(event="duplicate_dropped", step=step_id))
            return stop("duplicate")
        if state.status == "leased":
            # Another execution is running it (this is a redelivery of a long step): look
            # again once its lease could have lapsed; it commits, or its worker died.
            log.info("step %s of %s is leased by another execution", step_id, workflow_id)
            raise ctask.retry(countdown=self.lease_seconds / 2, max_retries=None)
        if state.status != S.RUNNING:
            return stop(state.status if state.status in ("stale", "paused") else "skipped")

        attempt = state.attempt
        t0 = time.perf_counter()
        output: StepOutput | None = None
        output_json = "null"
        error: str | None = None
        upstream = state.results.get(task.after) if task.after else None
        if task.after and (upstream is None or upstream.status != TaskStatus.COMPLETED):
            error = f"skipped: upstream step {task.after} did not complete"
        else:
            try:
                with self.leases.holding(workflow_id, step_id, owner):
                    output, output_json = self._call_agent(workflow_id, task, state)
            except SoftTimeLimitExceeded:
                error = f"TimeoutError: step exceeded its timeout of {task.timeout}s"
            except Exception as exc:  # an agent's failure is its step's result, not the worker's
                log.warning(
                    "step %s of %s attempt %d failed: %s",
                    step_id,
                    workflow_id,
                    attempt,
                    _describe(exc),
                    exc_info=not isinstance(exc, BatonError),
                )
                error = _describe(exc)
            if error and attempt <= task.retries:
                countdown = backoff(task, attempt)
                self.store.note(
                    workflow_id,
                    HistoryEntry(
                        event="step_retry",
                        step=step_id,
                        agent_id=task.agent_id,
                        task_type=task.task_type,
                        status="retrying",
                        error=error,
                        attempt=attempt,
                        execution_time=time.perf_counter() - t0,
                    ),
                )
                self.store.lease(workflow_id, step_id, owner, 0, release=True)
                raise ctask.retry(countdown=countdown, max_retries=None)
        elapsed = time.perf_counter() - t0

        handoff: PlannedTask | None = None
        if output is not None and output.handoff is not None:
            try:
                handoff = self._plan_handoff(workflow_id, task, output.handoff)
            except BatonError as exc:
                error, output = str(exc), None
        ok = error is None
        result = TaskResult(
            task_id=f"{workflow_id}:{step_id}",
            agent_id=task.agent_id,
            status=TaskStatus.COMPLETED if ok else TaskStatus.FAILED,
            result=output.output if output else None,
            error=error,
            execution_time=elapsed,
            metadata={
                "task_type": task.task_type,
                "parallel": task.group is not None,
                "attempt": attempt,
            },
            step_id=step_id,
            task_type=task.task_type,
            output_key=task.output_key,
            started_at=started_at,
            finished_at=utcnow(),
            worker=worker,
        )
        top = task.group is None
        nxt = Next()
        if handoff:
            nxt = Next([step_signature(self.app, workflow_id, handoff, run)])
        elif ok or not top:  # a failed member still ends its branch (the aggregate counts it)
            nxt = after(self.app, plan, workflow_id, task, run)
        send = self.outgoing(nxt, ctask.request.id)
        last = top and plan.is_last(task.index) and handoff is None
        outcome: Outcome = "fail" if top and not ok else "complete" if ok and last else "continue"
        commit = self.store.commit(
            workflow_id,
            result,
            node=step_id,
            output_json=output_json if ok else "null",
            advance=top,
            outcome=outcome,
            run=run,
            task_id=ctask.request.id,
            owner=owner,
            send=send,
            join=(nxt.group, len(nxt.ends)) if nxt.group and nxt.joins else None,
            handoff=handoff,
            max_handoffs=plan.max_handoffs,
        )
        if not commit.committed:
            return stop(commit.state)
        if commit.status == S.COMPENSATING:
            self.fail_workflow(workflow_id, run)
            if top:
                raise StepFailed(
                    f"workflow {workflow_id} failed at {step_id}: {error or 'see history'}"
                )
        elif commit.status == S.RUNNING:
            self.sent(nxt, commit.aggregate_id, commit.aggregate_message)
        return _outcome("completed" if ok else "failed", error)

    def _call_agent(
        self, workflow_id: str, task: PlannedTask, state: StepState
    ) -> tuple[StepOutput, str]:
        tt = self.registry.get_task(task.agent_id, task.task_type)
        step_input: StepInput[Any] = StepInput(
            workflow_id=workflow_id,
            step_id=task.step_id,
            agent_id=task.agent_id,
            task_type=task.task_type,
            parameters=tt.validate_params(task.parameters),
            shared_data=state.shared_data,
            previous_results=list(state.results.values()),
        )
        out = tt.run(step_input)
        encoded = dumps(out.output)  # not JSON-serialisable: this step fails, not its commit
        if len(encoded) > self.max_output_bytes:
            raise BatonError(
                f"output of {task.step_id} is {len(encoded) / 2**20:.1f} MiB, over the limit of "
                f"{self.max_output_bytes / 2**20:.1f} MiB (BATON_MAX_OUTPUT_BYTES)"
            )
        return out, encoded

    def _plan_handoff(self, workflow_id: str, task: PlannedTask, handoff: Handoff) -> PlannedTask:
        """Check a run-time handoff as a definition is checked at creation."""
        where = f"handoff from {task.step_id} to {handoff.agent_id}.{handoff.task_type}"
        if task.group is not None:
            raise BatonError(f"{where}: handoffs are allowed from top-level steps only")
        tt = self.registry.get_task(handoff.agent_id, handoff.task_type)
        try:
            params = tt.validate_params(handoff.parameters)
        except ValidationError as exc:
            raise BatonError(f"{where}: invalid parameters: {exc}") from None
        # The whole state's keys: the step itself may have loaded only some of them.
        available = self.store.data_keys(workflow_id) | (
            {task.output_key} if task.output_key else set()
        )
        reads = tt.reads_for(params)
        missing = [k for k in reads if k not in available]
        if missing:
            raise BatonError(f"{where}: it reads {missing}, which the state does not hold")
        if handoff.output_key and handoff.output_key in available:
            raise BatonError(f"{where}: output_key {handoff.output_key!r} is already in use")
        return PlannedTask(
            step_id=handoff_id(task),
            index=task.index,
            agent_id=handoff.agent_id,
            task_type=handoff.task_type,
            output_key=handoff.output_key,
            parameters=params.model_dump(mode="json"),
            context_keys=reads or None,  # as at creation: a task that declares reads loads those
            dynamic=True,
            compensation=tt.compensation,
        )

    # ------------------------------------------------------------------ groups

    def run_aggregate(self, ctask: Task, workflow_id: str, group_id: str, run: int) -> str:
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
                worker=ctask.request.hostname,
            ),
            run,
            [k for m in node.member_ids if (k := plan.tasks[m].output_key)],
            results=node.member_ids,
            owner=(owner := f"aggregate:{uuid.uuid4().hex[:8]}"),
            lease_seconds=self.lease_seconds,
            task_id=ctask.request.id,
        )
        if state.status == "leased":  # another copy of this callback is aggregating
            raise ctask.retry(countdown=self.lease_seconds / 2, max_retries=None)
        if state.status != S.RUNNING:
            return _outcome("skipped")
        members = [state.results.get(sid) for sid in node.member_ids]
        if any(m is None for m in members):
            # A superseded chord (the group was re-dispatched on resume): the newer one aggregates.
            log.info("aggregate of %s %s skipped: members still missing", workflow_id, group_id)
            self.store.lease(workflow_id, group_id, owner, 0, release=True)
            return _outcome("skipped")
        got = [m for m in members if m is not None]
        t0 = time.perf_counter()
        summary = aggregators[node.aggregate](got, _wall_time(got))
        ok_count = sum(m.status == TaskStatus.COMPLETED for m in got)
        rate = ok_count / len(got)
        error = None
        if node.on_failure == "fail" and ok_count < len(got):
            failed = len(got) - ok_count
            error = f"group {group_id}: {failed} of {len(got)} members failed (on_failure: fail)"
        elif node.min_success_rate is not None and rate < node.min_success_rate:
            error = (
                f"group {group_id}: success rate {rate:.2f} is below "
                f"min_success_rate {node.min_success_rate}"
            )
        ok = error is None
        result = TaskResult(
            task_id=f"{workflow_id}:{group_id}",
            agent_id=AGGREGATOR_AGENT,
            status=TaskStatus.COMPLETED if ok else TaskStatus.FAILED,
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
        nxt = after(self.app, plan, workflow_id, node, run) if ok else Next()
        send = self.outgoing(nxt, ctask.request.id)
        outcome: Outcome = (
            "fail" if not ok else "complete" if plan.is_last(node.index) else "continue"
        )
        commit = self.store.commit(
            workflow_id,
            result,
            node=group_id,
            output_json=dumps(summary),
            advance=True,
            outcome=outcome,
            run=run,
            task_id=ctask.request.id,
            send=send,
        )
        if commit.committed and commit.status == S.COMPENSATING:
            self.fail_workflow(workflow_id, run)
        elif commit.committed and commit.status == S.RUNNING:
            self.sent(nxt)
        return _outcome("completed" if ok else "failed", error)

    # ------------------------------------------------------------------ the saga

    def fail_workflow(self, workflow_id: str, run: int) -> None:
        """Compensate completed steps in reverse order, then restore the state (saga)."""
        to_undo = [
            self.store.task(workflow_id, sid)
            for sid, r in self.store.results(workflow_id).items()
            if r.status == TaskStatus.COMPLETED and r.agent_id != AGGREGATOR_AGENT
        ]
        to_undo = [t for t in to_undo if t.compensation]
        if to_undo:
            self.store.note(
                workflow_id,
                HistoryEntry(
                    event="compensation_started",
                    status="compensating",
                    changed=[t.step_id for t in reversed(to_undo)],
                ),
            )
            compensation_signature(self.app, workflow_id, to_undo, run).apply_async()
        else:
            self.finish_failure(workflow_id, run)

    def run_compensation(self, ctask: Task, workflow_id: str, step_id: str, run: int) -> None:
        task = self.store.task(workflow_id, step_id)
        state = self.store.read_state(workflow_id, task.context_keys)
        if state.status != S.COMPENSATING:
            return
        original = state.results.get(step_id)
        entry = {"step": step_id, "agent_id": task.agent_id, "task_type": task.compensation}
        try:
            tt = self.registry.get_task(task.agent_id, str(task.compensation))
            tt.run(
                StepInput(
                    workflow_id=workflow_id,
                    step_id=step_id,
                    agent_id=task.agent_id,
                    task_type=str(task.compensation),
                    parameters=tt.validate_params(task.parameters),
                    shared_data=state.shared_data,
                    previous_results=[original] if original else [],
                )
            )
        except Exception as exc:  # recorded; the other compensations still run
            log.warning("compensation of %s in %s failed: %s", step_id, workflow_id, _describe(exc))
            self.store.note(
                workflow_id,
                HistoryEntry(event="compensation_failed", error=_describe(exc), **entry),
            )
        else:
            self.store.note(
                workflow_id, HistoryEntry(event="step_compensated", status="compensated", **entry)
            )

    def finish_failure(self, workflow_id: str, run: int) -> None:
        """Restore the last consistent checkpoint and mark the workflow failed."""
        history = self.store.history(workflow_id)
        since = max((i for i, h in enumerate(history) if h.event == "step_failed"), default=0)
        outcome = CompensationOutcome(
            compensated=[str(h.step) for h in history[since:] if h.event == "step_compensated"],
            failures={
                str(h.step): str(h.error)
                for h in history[since:]
                if h.event == "compensation_failed"
            },
        )
        failed_step = next((h.step for h in reversed(history) if h.event == "step_failed"), None)
        target = self._consistent_version(
            workflow_id, [*outcome.compensated, *outcome.failures], failed_step
        )
        outcome = outcome.model_copy(update={"restored_to_version": target})
        self.store.restore(
            workflow_id,
            target,
            [S.COMPENSATING],
            S.FAILED,
            event="state_restored",
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


def _wall_time(results: list[TaskResult]) -> float:
    """The group's wall time: first member start to last member finish."""
    stamps = [(r.started_at, r.finished_at) for r in results if r.started_at and r.finished_at]
    if not stamps:
        return 0.0
    start = min(datetime.fromisoformat(s) for s, _ in stamps)
    end = max(datetime.fromisoformat(f) for _, f in stamps)
    return (end - start).total_seconds()
