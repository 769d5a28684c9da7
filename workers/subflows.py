"""Sub-workflow steps (``baton.workflow``): the step starts its child workflow and parks,
holding nothing, until the child ends; the child's end wakes the step's timer at once
(``wake_parent`` in ``_lib.lua``), and the timer sweep commits the step with the child's
outputs, or fails it (and its workflow, through the saga) with the child's failure.

The child's id is its parent's and the step's (``<parent>.<step>``), so a parent that is
retried, or whose step is delivered again, finds the child it has: a completed child is
not run again, a failed one is retried. The step's timer also looks at the child every
``CHECK_SECONDS``, in case a worker died between parking the step and creating the child.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from orchestration.definition import compile_plan, read_definition
from orchestration.errors import WorkflowNotFound
from orchestration.flow.dispatch import ALL_SENT
from orchestration.flow.resume import commit_wait
from orchestration.model.waits import SubflowParams, child_id
from orchestration.state.fields import MetaField
from orchestration.state.keys import due_member
from orchestration.state.scripts import SignalSpec
from orchestration.state.timers import DueTimers
from workers.branches import value_at
from workers.engine import Engine
from workers.steps import StepRun, outcome_word

log = logging.getLogger("baton.runner")
CHECK_SECONDS = 60.0


class SubflowRun(StepRun):
    """A worker reaching a sub-workflow step: park it, then start (or find) its child."""

    def _run(self) -> str:
        state = self.begin()
        if isinstance(state, str):
            return state
        reply = self.store.park(
            self.workflow_id, self.step_id, "", self.run_no, self.ctask.request.id or "",
            time.time() + CHECK_SECONDS,
        )  # fmt: skip
        if reply.state != "parked":
            return self._not_run(reply.state)
        settle_subflow(self.engine, self.workflow_id, self.step_id, self.run_no)
        return outcome_word("waiting for its sub-workflow")


def settle_subflow(engine: Engine, workflow_id: str, step_id: str, run: int) -> None:
    """Look at the step's child: start it if it is not there, retry it if it failed in an
    earlier run of the parent, commit the step if it ended, else look again later."""
    store, timers = engine.store, DueTimers(engine.store.redis, engine.store.prefix)
    parked = store.parked(workflow_id).get(step_id)
    if parked is None or parked.get("run") != run:
        timers.drop(workflow_id, step_id, run)  # committed, cancelled or rolled back
        return
    params = SubflowParams.model_validate(store.task(workflow_id, step_id).parameters)
    cid = child_id(workflow_id, step_id)
    try:
        status = store.status_of(cid)
    except WorkflowNotFound:
        start_child(engine, workflow_id, step_id, run, params)
        look_later(engine, timers, workflow_id, step_id, run)
        return
    child_run = int(store.redis.hget(store.keys(cid).meta, MetaField.PARENT_RUN) or 0)
    if status == "failed" and child_run < run:  # the parent was retried: so is the child
        link = {
            MetaField.PARENT_RUN: str(run),
            MetaField.PARENT_DUE: due_member(workflow_id, step_id, run),
        }
        store.redis.hset(store.keys(cid).meta, mapping=link)  # type: ignore[arg-type]
        engine.dispatch.retry(cid)
        look_later(engine, timers, workflow_id, step_id, run)
        return
    if not status.is_terminal:
        look_later(engine, timers, workflow_id, step_id, run)
        return
    child = store.get_status(cid)
    output: Any = {"workflow_id": cid, "status": status.value}
    outputs: dict[str, Any] = {}
    error = None
    if status == "completed" and params.outputs:
        data = store.redis.hmget(store.keys(cid).data, list(params.outputs.values()))
        outputs = {
            key: json.loads(raw) if raw is not None else None
            for key, raw in zip(params.outputs, data, strict=True)
        }
    elif status != "completed":
        where = f" at {child.failed_step}" if child.failed_step else ""
        error = f"sub-workflow {cid} {status.value}{where}: {child.error or status.value}"
    reply, _ = commit_wait(
        engine.app, store, engine.dispatch, workflow_id, step_id, run,
        SignalSpec(name="", by=cid, timer=True), output=output, error=error,
        since=parked.get("since"), outputs=outputs,
    )  # fmt: skip
    if not reply.committed:
        timers.drop(workflow_id, step_id, run)
    elif reply.status == "compensating":
        engine.saga.fail_workflow(workflow_id, run)


def look_later(engine: Engine, timers: DueTimers, workflow_id: str, step_id: str, run: int) -> None:
    """Look at the child again in ``CHECK_SECONDS``, unless it has ended meanwhile: its
    end woke the step's timer (``wake_parent``), which this must not push back; so, after
    pushing it, a child found ended brings it back to now."""
    timers.reschedule(workflow_id, step_id, run, time.time() + CHECK_SECONDS)
    try:
        ended = engine.store.status_of(child_id(workflow_id, step_id)).is_terminal
    except WorkflowNotFound:  # (not created: a worker died before; the timer creates it)
        return
    if ended:
        timers.reschedule(workflow_id, step_id, run, time.time())


def start_child(
    engine: Engine, workflow_id: str, step_id: str, run: int, params: SubflowParams
) -> None:
    """Create and start the child, its inputs read from the parent's shared_data now."""
    store = engine.store
    plan = compile_plan(
        read_definition(params.workflow), engine.registry, initial=set(params.inputs)
    )
    data: dict[str, Any] = {}
    for key, path in params.inputs.items():
        top, _, rest = path.partition(".")
        raw = store.redis.hget(store.keys(workflow_id).data, top)
        data[key] = value_at(json.loads(raw), rest.split(".") if rest else []) if raw else None
    cid = child_id(workflow_id, step_id)
    sending = engine.dispatch.prepare(engine.dispatch.first(plan, cid))
    created = store.create(
        cid, plan, start=sending.outgoing, data=data, parent=(workflow_id, step_id, run)
    )
    if created:
        engine.dispatch.follow(ALL_SENT, sending)
        log.info("%s of %s started its sub-workflow %s", step_id, workflow_id, cid)
