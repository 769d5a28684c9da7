"""A map at work: its start (``baton.map``, on the control queue) and its aggregate
(``baton.aggregate``, as a group's: ``workers/groups.py``); its batches are
``workers/map_batches.py``'s.

The start reads the list once, writes its items to the state store and sends as many
batch messages as the map's window allows. Once every batch of the run has committed,
the aggregate joins the items' results into the map's step. State and scripts:
``orchestration/state/maps.py``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from celery import Task

from orchestration.definition.plan import PlannedMap
from orchestration.errors import (
    MapInputError,
    UnknownAgent,
    UnknownTaskType,
)
from orchestration.flow.compiler import Next, aggregate_signature, batch_signature
from orchestration.model import (
    TaskResult,
    TaskStatus,
    WorkflowStatus,
    dumps,
    utcnow,
)
from orchestration.model.aggregate import aggregators
from orchestration.model.names import AGGREGATOR_AGENT, agent_queue
from orchestration.state.fields import MetaField
from orchestration.state.maps import ItemResult, MapStore
from orchestration.state.scripts import Outgoing
from workers.engine import Engine
from workers.groups import begin_aggregate, commit_node, verdict
from workers.steps import outcome_word

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
    status, run_now = store.redis.hmget(
        store.keys(workflow_id).meta, [MetaField.STATUS, MetaField.RUN]
    )
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
