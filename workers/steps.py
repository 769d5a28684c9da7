"""What a worker does with one step message, in five phases: begin, run the agent, decide,
commit, send what follows.

A message holds ``(workflow_id, step_id, run)``. **Begin** takes the step's lease and loads
what it may see (one script); **run** calls the agent function; **decide** turns its
outcome into a retry (a transient error with attempts left) or a ``TaskResult``;
**commit** writes it with one compare-and-set script, which also sends what comes next
(``orchestration/flow/outbox.py``); **send on** publishes what the script could not, or starts
the saga when the step failed its workflow. An agent's failure never escapes as the
worker's: it becomes its step's result.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from agents.base import StepInput, StepOutput, TaskType
from orchestration.definition import plan_handoff
from orchestration.definition.plan import PlannedTask
from orchestration.errors import (
    BatonError,
    OutputTooLarge,
    StepError,
    StepFailed,
    TurnMissed,
    UpstreamFailed,
    is_retryable,
)
from orchestration.flow.compiler import Next, next_messages, step_signature
from orchestration.model import (
    HistoryEntry,
    RunningStep,
    TaskResult,
    TaskStatus,
    WorkflowStatus,
    utcnow,
)
from orchestration.model.names import Event
from orchestration.state.commit import CommitRequest
from orchestration.state.decode import StepState
from orchestration.state.scripts import CommitReply, Outcome
from workers.engine import Engine
from workers.saga import describe
from workers.throttle import Throttled

log = logging.getLogger("baton.runner")
S = WorkflowStatus


def backoff(task: PlannedTask, attempt: int) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    delay = min(task.retry_backoff_max, task.retry_backoff * 2 ** (attempt - 1))
    return float(delay / 2 + random.uniform(0, delay / 2))


def outcome_word(status: str, error: str | None = None) -> str:
    """What a step task returns to Celery (Flower shows it as the task's result): its
    outcome in a word, the error after it. Nothing reads it back: the state store holds
    the result, and the task's arguments already name the workflow and step. (Celery
    reprs the return value twice, in the worker's log line and its task-succeeded event:
    a word costs a fraction of a record.)"""
    return f"{status}: {error}" if error else status


class StepRun(Throttled):
    """One execution of one step message."""

    def __init__(
        self,
        engine: Engine,
        ctask: Task,
        workflow_id: str,
        step_id: str,
        run: int,
        *,
        task: PlannedTask | None = None,
    ) -> None:
        self.engine, self.store = engine, engine.store
        self.ctask = ctask
        self.workflow_id, self.step_id, self.run_no = workflow_id, step_id, run
        self.plan = self.store.plan(workflow_id)
        self.task = task or self.store.task(workflow_id, step_id)
        self.worker = ctask.request.hostname
        self.owner = f"{self.worker}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this execution
        self.started_at = utcnow()
        self.limit_owner = f"{workflow_id}:{step_id}:{run}"  # one place in line per step
        self.refused: Exception | None = None  # its limit_key failed
        self.turn_at: float | None = None  # (monotonic) its rate turn: the call starts then
        self.consume = ""  # (a wait committing a kept signal: the signal's name)

    def __call__(self) -> str:
        budgets = self.admit()  # (throttled: put back to run when its turn comes)
        try:
            return self._run()
        finally:
            if budgets:
                self.engine.limiter.release(self.limit_owner, budgets)

    def _run(self) -> str:
        state = self.begin()
        if isinstance(state, str):
            return state
        output, error, elapsed = self.run_agent(state)
        result, handoff = self.decide(output, error, elapsed, state.attempt)
        nxt = self.what_follows(result, handoff)
        reply = self.commit(result, output, handoff, nxt)
        if not reply.committed:
            return self._not_run(reply.state)
        self.send_on(reply, result)
        ok = result.status == TaskStatus.COMPLETED
        return outcome_word("completed" if ok else "failed", result.error)

    # ------------------------------------------------------------------ begin

    def begin(self) -> StepState | str:
        """Take the lease and load the state; or the word for why the step does not run."""
        running = RunningStep(
            step_id=self.step_id,
            agent_id=self.task.agent_id,
            task_type=self.task.task_type,
            started_at=self.started_at,
            worker=self.worker,
        )
        visible, inserted_before = self.plan.visible_results(self.task)
        state = self.store.begin_step(
            self.workflow_id,
            running,
            self.run_no,
            self.task.context_keys,
            results=visible,
            inserted_before=inserted_before,
            owner=self.owner,
            lease_seconds=self.engine.lease_seconds,
            task_id=self.ctask.request.id,
        )
        if state.status == "committed":
            # Already committed (a redelivered message, or a group resumed): not run again.
            self.store.append_history(
                self.workflow_id, HistoryEntry(event=Event.DUPLICATE_DROPPED, step=self.step_id)
            )
            return self._not_run("duplicate")
        if state.status == "leased":
            # Another execution is running it (this is a redelivery of a long step): look
            # again once its lease could have lapsed; it commits, or its worker died.
            log.info("step %s of %s is leased by another execution", self.step_id, self.workflow_id)
            self._retry(self.engine.lease_seconds / 2)
        if state.status != S.RUNNING:
            return self._not_run(state.status if state.status in ("stale", "paused") else "skipped")
        return state

    def _not_run(self, why: str) -> str:
        log.info("step %s of %s not run: %s", self.step_id, self.workflow_id, why)
        return outcome_word(why)

    def _retry(self, countdown: float) -> NoReturn:
        raise self.ctask.retry(countdown=countdown, max_retries=None)

    # ------------------------------------------------------------------ run the agent

    def run_agent(self, state: StepState) -> tuple[StepOutput | None, BaseException | None, float]:
        """Call the agent (holding the lease); its output, or the error it failed with."""
        t0 = time.perf_counter()
        task = self.task
        upstream = state.results.get(task.after) if task.after else None
        if task.after and (upstream is None or upstream.status != TaskStatus.COMPLETED):
            return None, UpstreamFailed(task.after), time.perf_counter() - t0
        if self.refused is not None:
            return None, StepError(str(self.refused), retryable=False), 0.0
        try:
            with self.engine.leases.holding(
                self.workflow_id, self.step_id, self.owner, self._renew_slots
            ):
                return self._call_agent(state), None, time.perf_counter() - t0
        except TurnMissed as missed:
            self._back_in_line(missed)
        except SoftTimeLimitExceeded:
            timeout = TimeoutError(f"step exceeded its timeout of {task.timeout}s")
            return None, timeout, time.perf_counter() - t0
        except Exception as exc:  # an agent's failure is its step's result, not the worker's
            log.warning(
                "step %s of %s attempt %d failed: %s",
                self.step_id,
                self.workflow_id,
                state.attempt,
                describe(exc),
                exc_info=not isinstance(exc, BatonError),
            )
            return None, exc, time.perf_counter() - t0

    def _call_agent(self, state: StepState) -> StepOutput:
        task = self.task
        tt = self.engine.registry.get_task(task.agent_id, task.task_type)
        step_input = tt.input_for(
            self.workflow_id,
            task.step_id,
            task.parameters,
            state.shared_data,
            list(state.results.values()),
            sink=self.engine.events.sink(self.workflow_id),
        )
        try:
            return self._run_and_check(tt, step_input)
        finally:
            self.engine.events.flush()  # its emits come before its commit

    def _run_and_check(self, tt: TaskType, step_input: StepInput[Any]) -> StepOutput:
        task = self.task
        if tt.is_async:
            out = self.engine.loop.run(
                tt.arun(step_input), task.timeout, start_at=self.turn_at, on_time=True
            )
        else:
            self.wait_turn(on_time=True)
            t0 = time.monotonic()
            out = tt.run(step_input)
            on_a_thread = threading.current_thread() is not threading.main_thread()
            if on_a_thread and task.timeout and time.monotonic() - t0 > task.timeout:
                # Celery cannot interrupt a thread (asyncio, threads pools): it holds here.
                raise SoftTimeLimitExceeded()
        limit = self.engine.max_output_bytes
        if len(out.encoded) > limit:
            raise OutputTooLarge(
                f"output of {task.step_id} is {len(out.encoded) / 2**20:.1f} MiB, over the "
                f"limit of {limit / 2**20:.1f} MiB (BATON_MAX_OUTPUT_BYTES)"
            )
        return out

    # ------------------------------------------------------------------ decide

    def decide(
        self, output: StepOutput | None, exc: BaseException | None, elapsed: float, attempt: int
    ) -> tuple[TaskResult, PlannedTask | None]:
        """Retry a transient failure that has attempts left (this raises Celery's Retry);
        else the step's result, and the step its handoff inserts, if any."""
        task = self.task
        error = None
        if isinstance(exc, UpstreamFailed):
            error = str(exc)
        elif exc is not None:
            error = describe(exc)
            if attempt <= task.retries:  # attempts are left: is it worth one?
                if is_retryable(exc):
                    self._note_retry(error, attempt, elapsed)
                error += " (not retried: it would fail the same way again)"
        handoff: PlannedTask | None = None
        if output is not None and output.handoff is not None:
            try:
                available = self.store.data_keys(self.workflow_id) | (
                    {task.output_key} if task.output_key else set()
                )  # the whole state's keys: the step itself may have loaded only some
                handoff = plan_handoff(
                    task,
                    output.handoff.model_dump(exclude={"output"}),
                    available,
                    self.engine.registry,
                )
            except BatonError as refused:
                error, output = str(refused), None
        ok = error is None
        result = TaskResult(
            task_id=f"{self.workflow_id}:{self.step_id}",
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
            step_id=self.step_id,
            task_type=task.task_type,
            output_key=task.output_key,
            started_at=self.started_at,
            finished_at=utcnow(),
            worker=self.worker,
        )
        return result, handoff

    def _note_retry(self, error: str | None, attempt: int, elapsed: float) -> NoReturn:
        task = self.task
        self.store.append_history(
            self.workflow_id,
            HistoryEntry(
                event=Event.STEP_RETRY,
                step=self.step_id,
                agent_id=task.agent_id,
                task_type=task.task_type,
                status="retrying",
                error=error,
                attempt=attempt,
                execution_time=elapsed,
            ),
        )
        self.store.lease(self.workflow_id, self.step_id, self.owner, 0, release=True)
        self._retry(backoff(task, attempt))

    # ------------------------------------------------------------------ commit

    def what_follows(self, result: TaskResult, handoff: PlannedTask | None) -> Next:
        """The messages the commit sends: the inserted step, the next one, or nothing."""
        task = self.task
        if handoff:
            return Next([step_signature(self.engine.app, self.workflow_id, handoff, self.run_no)])
        if result.status == TaskStatus.COMPLETED or task.group is not None:
            # (a failed member still ends its branch: the aggregate counts it)
            return next_messages(self.engine.app, self.plan, self.workflow_id, task, self.run_no)
        return Next()

    def commit(
        self,
        result: TaskResult,
        output: StepOutput | None,
        handoff: PlannedTask | None,
        nxt: Next,
    ) -> CommitReply:
        """Commit the result with what follows it, in one compare-and-set script."""
        task, plan, ok = self.task, self.plan, result.status == TaskStatus.COMPLETED
        top = task.group is None  # (a branch's steps run in turn, as top-level ones do)
        last = plan.ends_workflow(task) and handoff is None
        outcome: Outcome = "fail" if top and not ok else "complete" if ok and last else "continue"
        request = CommitRequest(
            workflow_id=self.workflow_id, result=result, node=self.step_id, run=self.run_no,
            outcome=outcome, advance=top,
            output_json=output.encoded if ok and output else "null",
            task_id=self.ctask.request.id, owner=self.owner, handoff=handoff,
            max_handoffs=plan.max_handoffs, consume=self.consume,
        )  # fmt: skip
        return self.engine.dispatch.commit(request, nxt)

    # ------------------------------------------------------------------ send on

    def send_on(self, reply: CommitReply, result: TaskResult) -> None:
        """If this failed the workflow, start the saga (and raise ``StepFailed``, so Celery
        marks a top-level step's task failed); what follows went with the commit."""
        if reply.status == S.COMPENSATING:
            self.engine.saga.fail_workflow(self.workflow_id, self.run_no)
            if self.task.group is None:
                raise StepFailed(
                    f"workflow {self.workflow_id} failed at {self.step_id}: "
                    f"{result.error or 'see history'}"
                )
