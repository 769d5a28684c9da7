"""The state store: a workflow's handoff state in Redis, changed only by atomic scripts.

Reads are pipelined (one round trip); every write that touches more than one key is a
Lua script from ``orchestration/lua``, so a crash can never leave half a handoff.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import redis

from orchestration.errors import WorkflowNotFound, WorkflowStateError
from orchestration.keys import WorkflowKeys, index_key
from orchestration.models import (
    HistoryEntry,
    RunningStep,
    TaskResult,
    WorkflowContext,
    WorkflowStatus,
    WorkflowStatusReport,
    utcnow,
)
from orchestration.plan import Plan

log = logging.getLogger("baton.store")

Outcome = Literal["continue", "complete", "fail"]


def _script(name: str) -> str:
    return resources.files("orchestration").joinpath(f"lua/{name}.lua").read_text()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class StepState:
    """What a step sees when it begins: the workflow's status and its state so far."""

    status: str
    shared_data: dict[str, Any]
    results: dict[str, TaskResult]


@dataclass(frozen=True)
class CommitOutcome:
    state: Literal["committed", "duplicate", "not_running", "missing"]
    version: int = 0
    status: str = ""

    @property
    def committed(self) -> bool:
        return self.state == "committed"


class StateStore:
    def __init__(
        self, client: redis.Redis[bytes], *, prefix: str = "baton", retention: int = 0
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.retention = retention
        self._create = client.register_script(_script("create"))
        self._transition = client.register_script(_script("transition"))
        self._begin = client.register_script(_script("begin"))
        self._commit = client.register_script(_script("commit"))
        self._plans: dict[str, Plan] = {}

    def keys(self, workflow_id: str) -> WorkflowKeys:
        return WorkflowKeys(self.prefix, workflow_id)

    # ------------------------------------------------------------------ lifecycle

    def create(self, workflow_id: str, plan: Plan) -> bool:
        """Store a new workflow as ``created``; False if the id already exists."""
        k = self.keys(workflow_id)
        now = utcnow()
        entry = HistoryEntry(event="workflow_created", status="created", timestamp=now)
        created = self._create(
            keys=[k.meta, k.plan, index_key(self.prefix), k.history],
            args=[
                workflow_id,
                plan.name,
                now,
                plan.total_steps,
                plan.model_dump_json(),
                entry.model_dump_json(exclude_none=True),
                time.time(),
            ],
        )
        return bool(created)

    def transition(self, workflow_id: str, old: WorkflowStatus, new: WorkflowStatus) -> None:
        k = self.keys(workflow_id)
        entry = HistoryEntry(event=f"workflow_{new.value}", status=new.value)
        state, current = self._transition(
            keys=[k.meta, k.history],
            args=[
                old.value,
                new.value,
                entry.timestamp,
                entry.model_dump_json(exclude_none=True),
                k.events,
            ],
        )
        if state == b"missing":
            raise WorkflowNotFound(workflow_id)
        if state == b"refused":
            raise WorkflowStateError(
                f"workflow {workflow_id} is {current.decode()}, not {old.value}: cannot make it {new.value}"
            )

    def plan(self, workflow_id: str) -> Plan:
        """The workflow's plan; immutable, so cached per process."""
        plan = self._plans.get(workflow_id)
        if plan is None:
            raw = self.redis.get(self.keys(workflow_id).plan)
            if raw is None:
                raise WorkflowNotFound(workflow_id)
            plan = Plan.model_validate_json(raw)
            if len(self._plans) > 1024:
                self._plans.clear()
            self._plans[workflow_id] = plan
        return plan

    # ------------------------------------------------------------------ steps

    def begin_step(
        self, workflow_id: str, running: RunningStep, *, with_data: bool = True
    ) -> StepState:
        """Mark the step running and load state, in one round trip."""
        k = self.keys(workflow_id)
        pipe = self.redis.pipeline(transaction=False)
        self._begin(
            keys=[k.meta, k.running],
            args=[running.step_id, running.model_dump_json(), k.events],
            client=pipe,
        )
        if with_data:
            pipe.hgetall(k.data)
        pipe.hgetall(k.results)
        replies = pipe.execute()
        status = replies[0].decode()
        data = _decode_data(replies[1]) if with_data else {}
        return StepState(status, data, _decode_results(replies[-1], data))

    def commit(
        self,
        workflow_id: str,
        result: TaskResult,
        *,
        output_key: str | None,
        output_json: str,
        advance: bool,
        outcome: Outcome,
    ) -> CommitOutcome:
        k = self.keys(workflow_id)
        entry = HistoryEntry(
            event="step_completed" if result.status == "completed" else "step_failed",
            step=result.step_id,
            agent_id=result.agent_id,
            task_type=result.task_type,
            status=result.status.value,
            execution_time=result.execution_time,
            error=result.error,
        )
        state, value = self._commit(
            keys=[k.meta, k.data, k.results, k.history, k.running, k.plan],
            args=[
                result.step_id,
                output_key or "",
                output_json,
                _stored(result, output_key),
                entry.model_dump_json(exclude_none=True),
                int(advance),
                outcome,
                entry.timestamp,
                result.error or "",
                self.retention,
                k.events,
            ],
        )
        state = state.decode()
        if state == "committed" or state == "duplicate":
            return CommitOutcome(state, int(value))
        return CommitOutcome(state, status=value.decode() if isinstance(value, bytes) else "")

    # ------------------------------------------------------------------ reads

    def _meta(self, workflow_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(self.keys(workflow_id).meta)
        if not raw:
            raise WorkflowNotFound(workflow_id)
        return {k.decode(): v.decode() for k, v in raw.items()}

    def status_of(self, workflow_id: str) -> WorkflowStatus:
        raw = self.redis.hget(self.keys(workflow_id).meta, "status")
        if raw is None:
            raise WorkflowNotFound(workflow_id)
        return WorkflowStatus(raw.decode())

    def exists(self, workflow_id: str) -> bool:
        return bool(self.redis.exists(self.keys(workflow_id).meta))

    def get_context(self, workflow_id: str) -> WorkflowContext:
        k = self.keys(workflow_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.meta)
        pipe.hgetall(k.data)
        pipe.hgetall(k.results)
        pipe.lrange(k.history, 0, -1)
        meta_raw, data, results, history = pipe.execute()
        if not meta_raw:
            raise WorkflowNotFound(workflow_id)
        meta = {key.decode(): v.decode() for key, v in meta_raw.items()}
        shared = _decode_data(data)
        return WorkflowContext(
            workflow_id=workflow_id,
            name=meta.get("name", ""),
            created_at=meta["created_at"],
            status=WorkflowStatus(meta["status"]),
            current_step=int(meta["current_step"]),
            total_steps=int(meta["total_steps"]),
            shared_data=shared,
            task_results=_decode_results(results, shared),
            execution_history=[HistoryEntry.model_validate_json(h) for h in history],
            version=int(meta.get("version", 0)),
            error=meta.get("error"),
            failed_step=meta.get("failed_step"),
            updated_at=meta.get("updated_at"),
            finished_at=meta.get("finished_at"),
        )

    def get_status(self, workflow_id: str) -> WorkflowStatusReport:
        k = self.keys(workflow_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.meta)
        pipe.hkeys(k.data)
        pipe.hlen(k.results)
        pipe.hvals(k.running)
        meta_raw, data_keys, n_results, running_raw = pipe.execute()
        if not meta_raw:
            raise WorkflowNotFound(workflow_id)
        meta = {key.decode(): v.decode() for key, v in meta_raw.items()}
        done, total = int(meta["current_step"]), int(meta["total_steps"])
        running = sorted(
            (RunningStep.model_validate_json(r) for r in running_raw),
            key=lambda r: _step_sort_key(r.step_id),
        )
        return WorkflowStatusReport(
            workflow_id=workflow_id,
            name=meta.get("name", ""),
            status=WorkflowStatus(meta["status"]),
            progress=f"{done}/{total}",
            completion_percentage=round(done / max(total, 1) * 100, 1),
            task_results=n_results,
            shared_data_keys=sorted(key.decode() for key in data_keys),
            current_agent=running[0].agent_id if running else None,
            running_steps=running,
            error=meta.get("error"),
            failed_step=meta.get("failed_step"),
            created_at=meta["created_at"],
            updated_at=meta.get("updated_at"),
            finished_at=meta.get("finished_at"),
            version=int(meta.get("version", 0)),
        )

    def list_ids(self, limit: int = 50) -> list[str]:
        """Most recent workflow ids first; ids whose state has expired are dropped."""
        ids = [i.decode() for i in self.redis.zrevrange(index_key(self.prefix), 0, limit - 1)]
        pipe = self.redis.pipeline(transaction=False)
        for wid in ids:
            pipe.exists(self.keys(wid).meta)
        alive = pipe.execute()
        gone = [wid for wid, ok in zip(ids, alive, strict=True) if not ok]
        if gone:
            self.redis.zrem(index_key(self.prefix), *gone)
        return [wid for wid, ok in zip(ids, alive, strict=True) if ok]

    def subscribe(self, workflow_ids: list[str]) -> Iterator[None]:
        """Yield once at start and once per change to any of the workflows.

        A pub/sub subscription, not polling: a caller re-reads state after each yield.
        The subscription is made before the first yield, so no change can slip between
        a caller's read and its wait.
        """
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(*[self.keys(w).events for w in workflow_ids])
        try:
            yield None
            while True:
                msg = pubsub.get_message(timeout=1.0)
                if msg is not None:
                    # Drain what else arrived, then let the caller read once.
                    while pubsub.get_message(timeout=0) is not None:
                        pass
                    yield None
                else:
                    yield None  # a quiet second: let callers check deadlines
        finally:
            pubsub.close()


def _step_sort_key(step_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in step_id.removeprefix("step_").split(".") if p.isdigit())


def _decode_data(raw: dict[bytes, bytes]) -> dict[str, Any]:
    return {key.decode(): json.loads(v) for key, v in raw.items()}


def _stored(result: TaskResult, output_key: str | None) -> str:
    """The TaskResult as stored: an output already under its output_key is not kept twice."""
    if output_key and result.status == "completed":
        return result.model_copy(update={"result": None}).model_dump_json()
    return result.model_dump_json()


def _decode_results(raw: dict[bytes, bytes], data: dict[str, Any]) -> dict[str, TaskResult]:
    out = {}
    for key, value in raw.items():
        r = TaskResult.model_validate_json(value)
        if r.output_key and r.status == "completed" and r.output_key in data:
            r = r.model_copy(update={"result": data[r.output_key]})
        out[key.decode()] = r
    return dict(sorted(out.items(), key=lambda kv: _step_sort_key(kv[0])))
