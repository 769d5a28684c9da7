"""A map's batch at work (``map_batch``, the member task's message): it takes the next
batch in line, runs its items (an async task's all at once on the event loop, a plain
one's in turn), commits each item's result and sends one more message while batches
remain; the last batch of the run sends the aggregate (``workers/maps.py``).

An item is a step for every limit of its task: each call takes its own turn of the rate
and its own concurrency slot (owner ``<workflow_id>:<map>[<index>]:<run>``) just before it
starts, and gives the slot back when it ends, whatever the batch size. Items wait in the
batch (on the event loop, or the plain batch's thread), woken at once when a slot is freed
for them; the map shows as throttled meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from agents.base import StepInput, StepOutput, TaskType
from orchestration.errors import (
    MapItemError,
    OutputTooLarge,
    TurnMissed,
    is_retryable,
)
from orchestration.flow.compiler import Next, aggregate_signature, batch_signature
from orchestration.model import (
    RunningStep,
)
from orchestration.state.decode import decode_results
from orchestration.state.fields import batch_step
from orchestration.state.limiter import Budget, check_turn
from orchestration.state.maps import ItemResult, MapStore
from workers.engine import Engine
from workers.saga import describe
from workers.steps import StepRun, backoff, outcome_word
from workers.throttle import SLOT_RECHECK, THROTTLE_HORIZON

log = logging.getLogger("baton.runner")


class MapBatchRun(StepRun):
    """One message of a map: the batch it takes, its items run, their results committed."""

    def __init__(
        self, engine: Engine, ctask: Task, workflow_id: str, map_id: str, run: int
    ) -> None:
        self.node = engine.store.plan(workflow_id).map(map_id)
        super().__init__(engine, ctask, workflow_id, map_id, run, task=self.node.member)
        self.maps = MapStore(engine.store)
        self.item_budgets: list[Budget] = []  # each item's, under its own owner
        self.holding: set[str] = set()  # the items holding their slots now

    def admit(self) -> list[Budget]:
        """A batch takes no turn: each of its items takes its own (``_take_turn``)."""
        tt = self.engine.registry.get_task(self.task.agent_id, self.task.task_type)
        if tt.limits:
            self.item_budgets = self.budgets(tt)
        return []

    def _run(self) -> str:
        node, task = self.node, self.task
        visible, _ = self.plan.visible_results(task)
        running = RunningStep(
            step_id=node.step_id, agent_id=task.agent_id, task_type=task.task_type,
            started_at=self.started_at, worker=self.worker,
        )  # fmt: skip
        state = self.maps.begin(
            self.workflow_id, node, self.run_no, task_id=self.ctask.request.id,
            owner=self.owner, running=running, lease_seconds=self.engine.lease_seconds,
            data_keys=task.context_keys, fields=visible,
        )  # fmt: skip
        if state.state == "leased":
            self._retry(self.engine.lease_seconds / 2)
        if state.state != "ok":
            return self._not_run(state.state)
        base, n = state.base, state.n
        step = batch_step(node.step_id, state.batch)
        first = state.batch * node.batch_size
        todo: list[tuple[int, Any]] = []
        earlier_failed = 0
        for i, (item, earlier) in enumerate(zip(state.items, state.earlier, strict=True)):
            before = ItemResult.decode(earlier) if earlier else None
            if before is not None and before.ok:
                continue  # completed in an earlier run: not run again
            earlier_failed += before is not None
            todo.append((first + i, item))
        previous = list(decode_results(state.results, state.data).values())
        tt = self.engine.registry.get_task(task.agent_id, task.task_type)
        # One input for the batch, its parameters checked once; each item gets a copy.
        self.template = tt.input_for(
            self.workflow_id, node.step_id, task.parameters, state.data, previous,
            sink=self.engine.events.sink(self.workflow_id),
        )  # fmt: skip
        with self.engine.leases.holding(self.workflow_id, step, self.owner, self._renew_slots):
            try:
                if tt.is_async:
                    results = self.engine.loop.run(self._run_async(tt, todo))
                else:
                    results = {k: self._run_item(tt, k, item) for k, item in todo}
            finally:
                self.engine.events.flush()  # its emits come before its commit
                for owner in list(self.holding):  # (interrupted: the slots are given back)
                    self._release(owner)
        sig = batch_signature(self.engine.app, self.workflow_id, node, self.run_no)
        aggregate = aggregate_signature(
            self.engine.app, self.workflow_id, node.step_id, self.run_no
        )
        sending = self.engine.dispatch.prepare(
            Next([sig], aggregate=aggregate), self.ctask.request.id
        )
        reply = self.maps.commit(
            self.workflow_id, node, base, self.run_no, n, state.batch, results,
            earlier_failed=earlier_failed, task_id=self.ctask.request.id, send=sending.outgoing,
        )  # fmt: skip
        if not reply.committed:
            return self._not_run(reply.state)
        self.engine.dispatch.follow(reply, sending)
        ok = sum(r.ok for r in results.values())
        return outcome_word(f"batch {state.batch}: {ok} of {len(results)} items completed")

    # ------------------------------------------------------------------ one item

    def _input(self, index: int, item: Any) -> StepInput[Any]:
        return self.template.model_copy(
            update={"step_id": f"{self.node.step_id}[{index}]", "item": item, "index": index}
        )

    def _checked(self, out: StepOutput, *, seconds: float = 0.0, attempt: int = 1) -> ItemResult:
        if out.handoff is not None:
            raise MapItemError("a map's items cannot hand off or wait: return the output")
        limit = self.engine.max_output_bytes
        if len(out.encoded) > limit:
            raise OutputTooLarge(f"an item's output is {len(out.encoded):,} bytes, over {limit:,}")
        return ItemResult(True, out.encoded, seconds=seconds, attempt=attempt)

    # ------------------------------------------------------------------ an item's limits

    def _owner(self, index: int) -> str:
        """Who holds the item's slots under its limits ("": it has none to hold)."""
        if not self.item_budgets:
            return ""
        return f"{self.workflow_id}:{self.node.step_id}[{index}]:{self.run_no}"

    async def _take_turn(self, owner: str) -> None:
        """Wait for the item's turn under its limits: its rate turn, its concurrency slots
        (woken when a release frees one for it), as a top-level step would; it returns at
        the turn, with the slots held (to be given back with ``_release``)."""
        limiter, reserved = self.engine.limiter, False
        with limiter.wakeups.expecting(owner) as wake:
            while True:
                a = limiter.admit(
                    self.store.keys(self.workflow_id), self.node.step_id, owner,
                    self.item_budgets, reserved=reserved, slot_ttl=self.engine.lease_seconds,
                    horizon=THROTTLE_HORIZON, retry=SLOT_RECHECK, item=True,
                )  # fmt: skip
                if a.state == "admitted":
                    self.holding.add(owner)
                    if a.turn is None:
                        return
                    turn_at = time.monotonic() + a.turn - time.time()
                    if (delay := turn_at - time.monotonic()) > 0:
                        await asyncio.sleep(delay)  # (its turn: a deadline, not a poll)
                    try:
                        check_turn(turn_at, time.monotonic())
                        return
                    except TurnMissed:  # too late for it: a new turn (the slot is kept)
                        reserved = False
                        continue
                reserved = a.state == "reserved"
                if a.why == "concurrency":
                    await wake.wait_async(a.wait)
                else:
                    await asyncio.sleep(a.wait)

    def _release(self, owner: str) -> None:
        if owner in self.holding:
            self.holding.discard(owner)
            self.engine.limiter.release(owner, self.item_budgets)

    def _renew_slots(self) -> None:
        if self.holding:
            self.engine.limiter.renew(
                list(self.holding), self.item_budgets, self.engine.lease_seconds
            )

    # ------------------------------------------------------------------ one item

    def _run_item(self, tt: TaskType, index: int, item: Any) -> ItemResult:
        """Run one item of a plain task, retrying a transient failure as a step would;
        each attempt takes its turn under the task's limits (waited for on the loop)."""
        attempt, owner = 0, self._owner(index)
        while True:
            attempt += 1
            if self.refused is not None:
                return ItemResult(False, error=str(self.refused), attempt=attempt)
            if self.item_budgets:
                self.engine.loop.run(self._take_turn(owner))
            t0, out = time.perf_counter(), None
            error: BaseException | None = None
            try:
                try:
                    out = tt.run(self._input(index, item))
                finally:
                    self._release(owner)
                if self.task.timeout and time.perf_counter() - t0 > self.task.timeout:
                    raise SoftTimeLimitExceeded()
            except SoftTimeLimitExceeded:
                error = self._timed_out()
            except Exception as exc:  # an item's failure is its result, not the batch's
                error = exc
            done = self._settle(index, attempt, t0, out, error)
            if isinstance(done, ItemResult):
                return done
            time.sleep(done)

    async def _run_async(self, tt: TaskType, todo: list[tuple[int, Any]]) -> dict[int, ItemResult]:
        """Every item of the batch on the loop at once (as many as the map lets run)."""
        gate = asyncio.Semaphore(self.node.in_flight(True))

        async def one(index: int, item: Any) -> ItemResult:
            async with gate:
                attempt, owner = 0, self._owner(index)
                while True:
                    attempt += 1
                    if self.refused is not None:
                        return ItemResult(False, error=str(self.refused), attempt=attempt)
                    if self.item_budgets:
                        await self._take_turn(owner)
                    t0, out = time.perf_counter(), None
                    error: BaseException | None = None
                    try:
                        try:
                            async with asyncio.timeout(self.task.timeout):
                                out = await tt.arun(self._input(index, item))
                        finally:
                            self._release(owner)
                    except TimeoutError:
                        error = self._timed_out()
                    except Exception as exc:
                        error = exc
                    done = self._settle(index, attempt, t0, out, error)
                    if isinstance(done, ItemResult):
                        return done
                    await asyncio.sleep(done)

        outcomes = await asyncio.gather(*(one(k, item) for k, item in todo))
        return {k: r for (k, _), r in zip(todo, outcomes, strict=True)}

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(f"item exceeded its timeout of {self.task.timeout}s")

    def _settle(
        self,
        index: int,
        attempt: int,
        t0: float,
        out: StepOutput | None,
        error: BaseException | None,
    ) -> ItemResult | float:
        """An attempt's outcome: the item's result, or (a transient failure with attempts
        left) the seconds to wait before its next attempt."""
        if error is None and out is not None:
            try:
                return self._checked(out, seconds=time.perf_counter() - t0, attempt=attempt)
            except Exception as exc:
                error = exc
        error = error or RuntimeError("the item returned nothing")
        if attempt <= self.task.retries and is_retryable(error):
            return backoff(self.task, attempt)
        log.warning(
            "map %s of %s: item %d failed: %s",
            self.node.step_id, self.workflow_id, index, describe(error),
        )  # fmt: skip
        return ItemResult(
            False, error=describe(error), seconds=time.perf_counter() - t0, attempt=attempt
        )
