"""A map at work: its start (``baton.map``, on the control queue), its batches (the
member task's messages, ``map_batch``), and its aggregate (``baton.aggregate``, as a
group's: ``workers/groups.py``).

The start reads the list once, writes its items to the state store and sends as many
batch messages as the map's window allows; each batch takes the next batch in line,
runs its items (an async task's all at once on the event loop, a plain one's in turn),
commits each item's result and sends one more message while batches remain. The last
batch of the run sends the aggregate. State and scripts: ``orchestration/state/maps.py``.

An item is a step for every limit of its task: each call takes its own turn of the rate
and its own concurrency slot (owner ``<workflow_id>:<map>[<index>]:<run>``) just before it
starts, and gives the slot back when it ends, whatever the batch size. Items wait in the
batch (on the event loop, or the plain batch's thread), woken at once when a slot is freed
for them; the map shows as throttled meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from agents.base import StepInput, StepOutput, TaskType
from orchestration.definition.plan import PlannedMap
from orchestration.errors import (
    MapInputError,
    MapItemError,
    OutputTooLarge,
    TurnMissed,
    UnknownAgent,
    UnknownTaskType,
    is_retryable,
)
from orchestration.flow.compiler import Next, aggregate_signature, batch_signature
from orchestration.model import (
    RunningStep,
    TaskResult,
    TaskStatus,
    WorkflowStatus,
    dumps,
    utcnow,
)
from orchestration.model.aggregate import aggregators
from orchestration.model.names import AGGREGATOR_AGENT, agent_queue
from orchestration.state.decode import decode_results
from orchestration.state.limiter import Budget, check_turn
from orchestration.state.maps import ItemResult, MapStore
from orchestration.state.scripts import Outgoing
from workers.engine import Engine
from workers.groups import begin_aggregate, commit_node, verdict
from workers.saga import describe
from workers.steps import StepRun, backoff, outcome_word
from workers.throttle import SLOT_RECHECK, THROTTLE_HORIZON

log = logging.getLogger("baton.runner")
S = WorkflowStatus
#: Most batch messages of one map in flight (its window, if smaller, is the cap).
MAX_IN_FLIGHT = 1000


def run_map_start(
    engine: Engine, ctask: Task, workflow_id: str, map_id: str, run: int, reset: bool
) -> str:
    """Read the map's list (the first time), then send its batches' first messages."""
    store, maps = engine.store, MapStore(engine.store)
    node = store.plan(workflow_id).map(map_id)
    status, run_now = store.redis.hmget(store.keys(workflow_id).meta, "status", "run")
    if status is None or int(run_now or 0) != run or status.decode() != S.RUNNING:
        # (paused: the start script records where, and resume starts the map again)
        maps.start(workflow_id, node, "", run, 0, [], 0, Outgoing(), task_id=ctask.request.id)
        return outcome_word("skipped")
    base = maps.base(workflow_id, map_id)
    n = maps.count(workflow_id, base)
    if n is None:
        try:
            items = maps.read_list(workflow_id, node)
        except MapInputError as exc:
            return fail_map(engine, ctask, workflow_id, node, run, f"map {map_id}: {exc}")
        maps.put_items(workflow_id, base, items, node.batch_size)
        n = len(items)
    todo = maps.todo(workflow_id, base, n, node.batch_size)
    try:
        tt = engine.registry.get_task(node.member.agent_id, node.member.task_type)
    except (UnknownAgent, UnknownTaskType) as exc:
        return hand_on(engine, ctask, workflow_id, node, run, exc)
    window = min(node.window(tt.is_async), MAX_IN_FLIGHT)
    sigs = [
        batch_signature(engine.app, workflow_id, node, run) for _ in range(min(window, len(todo)))
    ]
    aggregate = aggregate_signature(engine.app, workflow_id, map_id, run)
    sending = engine.dispatch.prepare(
        Next(sigs, group=map_id, aggregate=aggregate), ctask.request.id, whole=True
    )
    reply = maps.start(
        workflow_id, node, base, run, n, todo, window, sending.outgoing,
        task_id=ctask.request.id, reset=reset,
    )  # fmt: skip
    if reply.state != "ok":
        return outcome_word(reply.state)
    engine.dispatch.follow(reply, sending)
    log.info("map %s of %s: %d items, %d batches sent", map_id, workflow_id, n, reply.sent)
    return outcome_word(f"started: {n} items")


def hand_on(
    engine: Engine,
    ctask: Task,
    workflow_id: str,
    node: PlannedMap,
    run: int,
    exc: UnknownAgent | UnknownTaskType,
) -> str:
    """A map's start taken by a worker that has not loaded its task's agent (it needs to
    know whether the task is async): sent on to the agent's own queue, whose workers
    have; taken there by one that has not either, the map fails saying so."""
    queue = agent_queue(node.member.agent_id)
    if (ctask.request.delivery_info or {}).get("routing_key") != queue:
        log.info("map %s of %s handed on to %s: %s", node.step_id, workflow_id, queue, exc)
        raise ctask.retry(queue=queue, countdown=0, max_retries=None)
    error = (
        f"map {node.step_id}: no worker could start it: {exc} "
        f"(on {ctask.request.hostname}, serving {queue}; BATON_AGENT_MODULES must load it)"
    )
    return fail_map(engine, ctask, workflow_id, node, run, error)


def run_map_aggregate(
    engine: Engine, ctask: Task, workflow_id: str, node: PlannedMap, run: int
) -> str:
    """Once every batch of the run has committed: the items' results, aggregated, as the
    map's step (a failed item counts against ``min_success_rate`` and ``on_failure``)."""
    maps = MapStore(engine.store)
    owner = f"aggregate:{uuid.uuid4().hex[:8]}"
    state = begin_aggregate(engine, ctask, workflow_id, node, run, owner, data_keys=[], results=[])
    if state is None:
        return outcome_word("skipped")
    started_at, t0 = utcnow(), time.perf_counter()
    engine.limiter.settled(engine.store.keys(workflow_id), node.step_id)  # none waits now
    base = maps.base(workflow_id, node.step_id)
    raw = maps.raw_results(workflow_id, base, maps.count(workflow_id, base) or 0)
    if any(r is None for r in raw):
        log.info("aggregate of map %s %s skipped: items still open", workflow_id, node.step_id)
        engine.store.lease(workflow_id, node.step_id, owner, 0, release=True)
        return outcome_word("skipped")
    output: Any = None
    if node.aggregate == "collect":  # (100,000 items: their outputs joined, none parsed)
        output_json, ok, n_items = collected(raw)
        if node.output_key is None:  # the result keeps it (else shared_data does)
            output = json.loads(output_json)
    else:
        done = [ItemResult.decode(r) for r in raw if r is not None]
        ok, n_items = sum(r.ok for r in done), len(done)
        member = node.member
        output = aggregators[node.aggregate](
            [
                TaskResult.model_construct(
                    task_id=f"{workflow_id}:{node.step_id}[{k}]",
                    agent_id=member.agent_id,
                    status=TaskStatus.COMPLETED if r.ok else TaskStatus.FAILED,
                    result=r.output,
                    error=r.error,
                    execution_time=r.seconds,
                    step_id=f"{node.step_id}[{k}]",
                    task_type=member.task_type,
                    metadata={},
                )  # fmt: skip
                for k, r in enumerate(done)
            ],
            sum(r.seconds for r in done),
        )
        output_json = dumps(output)
    error = verdict(node, ok, n_items)
    result = TaskResult(
        task_id=f"{workflow_id}:{node.step_id}", agent_id=AGGREGATOR_AGENT,
        status=TaskStatus.COMPLETED if error is None else TaskStatus.FAILED,
        result=output, error=error, execution_time=time.perf_counter() - t0,
        metadata={"task_type": f"map.{node.aggregate}", "items": n_items,
                  "failed": n_items - ok},
        step_id=node.step_id, task_type=f"map.{node.aggregate}", output_key=node.output_key,
        started_at=started_at, finished_at=utcnow(), worker=ctask.request.hostname,
    )  # fmt: skip
    commit_node(engine, ctask, workflow_id, node, run, result, output_json)
    return outcome_word("completed" if error is None else "failed", error)


def collected(raw: list[bytes | None]) -> tuple[str, int, int]:
    """The items' outputs as one JSON list (a failed item's null), joined from their stored
    JSON without parsing any; and how many completed, of how many."""
    parts, ok = [], 0
    for r in raw:
        if ItemResult.completed(r):
            assert r is not None
            parts.append(r[r.index(b" ") + 1 :])
            ok += 1
        else:
            parts.append(b"null")
    return (b"[" + b",".join(parts) + b"]").decode(), ok, len(raw)


def fail_map(
    engine: Engine, ctask: Task, workflow_id: str, node: PlannedMap, run: int, error: str
) -> str:
    result = TaskResult(
        task_id=f"{workflow_id}:{node.step_id}", agent_id=AGGREGATOR_AGENT,
        status=TaskStatus.FAILED,
        error=error, step_id=node.step_id, task_type=f"map.{node.aggregate}",
        output_key=node.output_key, started_at=utcnow(), finished_at=utcnow(),
        worker=ctask.request.hostname,
    )  # fmt: skip
    commit_node(engine, ctask, workflow_id, node, run, result, "null")
    return outcome_word("failed", error)


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
        step = f"{node.step_id}#{state.batch}"
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

    def _checked(self, out: StepOutput) -> ItemResult:
        if out.handoff is not None:
            raise MapItemError("a map's items cannot hand off or wait: return the output")
        limit = self.engine.max_output_bytes
        if len(out.encoded) > limit:
            raise OutputTooLarge(f"an item's output is {len(out.encoded):,} bytes, over {limit:,}")
        return ItemResult(True, out.encoded)

    # ------------------------------------------------------------------ an item's limits

    def _owner(self, index: int) -> str:
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
            t0 = time.perf_counter()
            try:
                try:
                    out = tt.run(self._input(index, item))
                finally:
                    self._release(owner)
                res = self._checked(out)
                timeout = self.task.timeout
                if timeout and time.perf_counter() - t0 > timeout:
                    raise SoftTimeLimitExceeded()
                return ItemResult(
                    True, res.output_json, seconds=time.perf_counter() - t0, attempt=attempt
                )
            except SoftTimeLimitExceeded:
                error: BaseException = TimeoutError(
                    f"item exceeded its timeout of {self.task.timeout}s"
                )
            except Exception as exc:  # an item's failure is its result, not the batch's
                error = exc
            if attempt <= self.task.retries and is_retryable(error):
                time.sleep(backoff(self.task, attempt))
                continue
            log.warning(
                "map %s of %s: item %d failed: %s",
                self.node.step_id,
                self.workflow_id,
                index,
                describe(error),
            )
            return ItemResult(
                False, error=describe(error), seconds=time.perf_counter() - t0, attempt=attempt
            )

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
                    t0 = time.perf_counter()
                    try:
                        try:
                            async with asyncio.timeout(self.task.timeout):
                                out = await tt.arun(self._input(index, item))
                        finally:
                            self._release(owner)
                        res = self._checked(out)
                        return ItemResult(
                            True, res.output_json, seconds=time.perf_counter() - t0, attempt=attempt
                        )
                    except TimeoutError:
                        error: BaseException = TimeoutError(
                            f"item exceeded its timeout of {self.task.timeout}s"
                        )
                    except Exception as exc:
                        error = exc
                    if attempt <= self.task.retries and is_retryable(error):
                        await asyncio.sleep(backoff(self.task, attempt))
                        continue
                    return ItemResult(
                        False,
                        error=describe(error),
                        seconds=time.perf_counter() - t0,
                        attempt=attempt,
                    )

        outcomes = await asyncio.gather(*(one(k, item) for k, item in todo))
        return {k: r for (k, _), r in zip(todo, outcomes, strict=True)}
