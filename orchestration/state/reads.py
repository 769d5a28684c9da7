"""Reading a workflow's state: plans, results, history, checkpoints, status reports.

Reads are plain commands, pipelined into one round trip where a view needs several keys;
they never write (``list_ids`` aside, which drops expired ids from the index). Writes are
``orchestration/state/store.py``'s, through the Lua scripts.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from orchestration.definition.plan import Plan, PlannedTask
from orchestration.errors import WorkflowNotFound, WorkflowStateError
from orchestration.model import (
    Checkpoint,
    HistoryEntry,
    MapProgress,
    RunningStep,
    StreamEvent,
    TaskResult,
    TaskStatus,
    ThrottledStep,
    WorkflowContext,
    WorkflowStatus,
    WorkflowStatusReport,
)
from orchestration.model.bounds import stored_ms
from orchestration.model.names import Event
from orchestration.model.waits import SUBFLOW_TASK, WAIT_AGENT, child_id
from orchestration.state.connection import text
from orchestration.state.decode import (
    Meta,
    StepState,
    at_version,
    decode_data,
    decode_results,
    step_sort_key,
)
from orchestration.state.fields import (
    STREAM_FIELD,
    LeaseRecord,
    MapField,
    SignalField,
    StepField,
    WaitRecord,
    map_base,
)
from orchestration.state.fields import MetaField as F
from orchestration.state.index import WorkflowIndex
from orchestration.state.keys import WorkflowKeys, metrics_key
from orchestration.state.pubsub import Subscriptions


class StateReader:
    """Read views of the workflows under one key prefix."""

    def __init__(self, client: redis.Redis[bytes], *, prefix: str = "baton") -> None:
        self.redis = client
        self.prefix = prefix
        self.index = WorkflowIndex(client, prefix)
        self.channels = Subscriptions(client, prefix)
        self._plans: dict[str, Plan] = {}

    def keys(self, workflow_id: str) -> WorkflowKeys:
        return WorkflowKeys(self.prefix, workflow_id)

    # ------------------------------------------------------------------ the plan

    def plan(self, workflow_id: str) -> Plan:
        """The workflow's static plan; immutable, so cached per process."""
        plan = self._plans.get(workflow_id)
        if plan is None:
            raw = self.redis.get(self.keys(workflow_id).plan)
            if raw is None:
                raise WorkflowNotFound(workflow_id)
            # (Another step may have parsed it meanwhile: a thousand steps of one workflow
            # starting at once in the asyncio pool all wait on that GET together, and a big
            # plan's parse costs milliseconds each.)
            if (plan := self._plans.get(workflow_id)) is not None:
                return plan
            plan = Plan.model_validate_json(raw)
            if len(self._plans) > 1024:
                self._plans.clear()
            self._plans[workflow_id] = plan
        return plan

    def task(self, workflow_id: str, step_id: str) -> PlannedTask:
        """A step of the plan, or one inserted at run time by a handoff."""
        found = self.plan(workflow_id).tasks.get(step_id)
        if found is None:
            raw = self.redis.hget(self.keys(workflow_id).dynamic, step_id)
            if raw is None:
                raise WorkflowNotFound(f"{workflow_id} has no step {step_id}")
            found = PlannedTask.model_validate_json(raw)
        return found

    def inserted(self, workflow_id: str) -> list[PlannedTask]:
        """Steps inserted at run time by handoffs."""
        raw = self.redis.hvals(self.keys(workflow_id).dynamic)
        return [PlannedTask.model_validate_json(v) for v in raw]

    # ------------------------------------------------------------------ single items

    def status_of(self, workflow_id: str) -> WorkflowStatus:
        raw = self.redis.hget(self.keys(workflow_id).meta, F.STATUS)
        if raw is None:
            raise WorkflowNotFound(workflow_id)
        return WorkflowStatus(raw.decode())

    def data_keys(self, workflow_id: str) -> set[str]:
        """The keys shared_data holds now."""
        return {text(k) for k in self.redis.hkeys(self.keys(workflow_id).data)}

    def results(self, workflow_id: str) -> dict[str, TaskResult]:
        """Task results by step id (outputs kept under an output_key are not loaded)."""
        return decode_results(self.redis.hgetall(self.keys(workflow_id).results), {})

    def versions(self, workflow_id: str) -> dict[str, int]:
        """The version that wrote each live item (see ``WorkflowKeys.versions``)."""
        raw = self.redis.hgetall(self.keys(workflow_id).versions)
        return {text(k): int(v) for k, v in raw.items()}

    def events(
        self, workflow_id: str, since: str = "0-0", block: float | None = None, count: int = 500
    ) -> list[StreamEvent]:
        """The workflow's stream events after ``since``; with ``block``, wait up to that
        many seconds for one when there are none yet."""
        key = self.keys(workflow_id).stream
        ms = None if block is None else max(1, int(block * 1000))
        reply = self.redis.xread({key: since}, count=count, block=ms)
        return [
            StreamEvent.model_validate(
                {**json.loads(fields[STREAM_FIELD.encode()]), "id": text(entry_id)}
            )
            for _, entries in reply or []
            for entry_id, fields in entries
        ]

    def live(self, workflow_id: str) -> dict[str, dict[str, Any]]:
        """The latest ``emitted`` and ``progress`` of each step that wrote any."""
        out: dict[str, dict[str, Any]] = {}
        for field, raw in self.redis.hgetall(self.keys(workflow_id).steps).items():
            parsed = StepField.parse(text(field))
            if parsed and parsed[0] in (StepField.EMITTED, StepField.PROGRESS):
                kind, step = parsed
                out.setdefault(step, {})[kind.value] = json.loads(raw).get("data")
        return out

    def parked(self, workflow_id: str) -> dict[str, dict[str, Any]]:
        """The waits parked now: step_id -> {name, run, since, due_ms}; a ``due_ms`` past
        the calendar's end (an older version took any duration) reads as the far future."""
        raw = self.redis.hgetall(self.keys(workflow_id).waits)
        parked = {text(k): json.loads(v) for k, v in raw.items()}
        due = WaitRecord.DUE_MS
        return {k: {**w, due: stored_ms(w.get(due))} for k, w in parked.items()}

    def kept_signal(self, workflow_id: str, name: str) -> tuple[str, dict[str, Any]] | None:
        """A signal kept for a wait not reached yet: its payload (JSON) and who sent it."""
        payload, meta = self.redis.hmget(
            self.keys(workflow_id).signals, SignalField.NAME.of(name), SignalField.META.of(name)
        )
        if payload is None:
            return None
        return text(payload), json.loads(meta) if meta else {}

    def history(self, workflow_id: str) -> list[HistoryEntry]:
        raw = self.redis.lrange(self.keys(workflow_id).history, 0, -1)
        return [HistoryEntry.model_validate_json(h) for h in raw]

    def outstanding(self, workflow_id: str) -> set[str]:
        """Task ids sent and not yet accounted for by a commit."""
        return {text(i) for i in self.redis.smembers(self.keys(workflow_id).tasks)}

    def live_leases(self, workflow_id: str) -> list[str]:
        """Steps whose lease an execution is still renewing."""
        now_ms = time.time() * 1000
        raw = self.redis.hgetall(self.keys(workflow_id).steps)
        leases = ((StepField.parse(text(f)), v) for f, v in raw.items())
        return [
            field[1]
            for field, v in leases
            if field and field[0] is StepField.LEASE and json.loads(v)[LeaseRecord.UNTIL] > now_ms
        ]

    def metrics(self) -> dict[str, float]:
        """The counters behind ``/metrics`` (see ``names.Metric``)."""
        raw = self.redis.hgetall(metrics_key(self.prefix))
        return {text(k): float(v) for k, v in raw.items()}

    # ------------------------------------------------------------------ views

    def read_state(self, workflow_id: str, context_keys: list[str] | None = None) -> StepState:
        """The status and state as they are, without taking part in a step."""
        k = self.keys(workflow_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(k.meta, F.STATUS)
        if context_keys is None:
            pipe.hgetall(k.data)
        else:
            pipe.hmget(k.data, context_keys or ["-"])
        pipe.hgetall(k.results)
        status, data_raw, results = pipe.execute()
        if context_keys is None:
            data = decode_data(data_raw)
        else:
            data = {key: json.loads(v) for key, v in zip(context_keys, data_raw, strict=False) if v}
        return StepState(text(status) or "missing", data, decode_results(results, data))

    def get_context(self, workflow_id: str, version: int | None = None) -> WorkflowContext:
        """The workflow's state now, or as it was at checkpoint ``version``."""
        k = self.keys(workflow_id)
        pipe = self.redis.pipeline(transaction=False)
        past = (k.versions, k.archive) if version is not None else ()  # only for the past
        for key in (k.meta, k.data, k.results, *past):
            pipe.hgetall(key)
        pipe.lrange(k.history, 0, -1)
        meta_raw, data, results, *rest = pipe.execute()
        meta = Meta.decode(workflow_id, meta_raw)
        versions_raw, archive = rest[:-1] if past else ({}, {})
        history = [HistoryEntry.model_validate_json(h) for h in rest[-1]]
        current = meta.number(F.VERSION)
        current_step = meta.number(F.CURRENT_STEP)
        if version is not None and version != current:
            if not 0 <= version <= current:
                raise WorkflowStateError(
                    f"workflow {workflow_id} has versions 0..{current}, not {version}"
                )
            versions = {text(f): int(v) for f, v in versions_raw.items()}
            data, results = at_version(versions, archive, version, data, results)
            history = [h for h in history if h.version is None or h.version <= version]
        shared = decode_data(data)
        task_results = decode_results(results, shared)
        if version not in (None, current):
            current_step = sum(
                1
                for r in task_results.values()
                if r.status == TaskStatus.COMPLETED and "." not in r.step_id
            )
        return WorkflowContext(
            workflow_id=workflow_id,
            name=meta.get(F.NAME) or "",
            created_at=meta.fields[F.CREATED_AT],
            status=meta.status,
            current_step=current_step,
            total_steps=meta.number(F.TOTAL_STEPS),
            shared_data=shared,
            task_results=task_results,
            execution_history=history,
            version=current if version is None else version,
            error=meta.get(F.ERROR),
            failed_step=meta.get(F.FAILED_STEP),
            updated_at=meta.get(F.UPDATED_AT),
            finished_at=meta.get(F.FINISHED_AT),
            run=meta.number(F.RUN, 1),
            compensation=meta.compensation,
        )

    def get_checkpoints(self, workflow_id: str) -> list[Checkpoint]:
        """Every version of the state, oldest first (version 0: the workflow as created)."""
        history = self.history(workflow_id)
        if not history:
            raise WorkflowNotFound(workflow_id)
        first = history[0]
        points = [Checkpoint(version=0, event=first.event, timestamp=first.timestamp)]
        for h in history:
            if h.version is not None and h.event != Event.WORKFLOW_COMPLETED:
                points.append(
                    Checkpoint(
                        version=h.version,
                        event=h.event,
                        step=h.step,
                        agent_id=h.agent_id,
                        task_type=h.task_type,
                        changed=h.changed or [],
                        restored_to=h.restored_to,
                        timestamp=h.timestamp,
                    )
                )
        return points

    def children(self, workflow_id: str) -> list[str]:
        """The ids of its sub-workflows that exist (started by its ``workflow`` steps)."""
        ids = [
            child_id(workflow_id, t.step_id)
            for t in self.plan(workflow_id).tasks.values()
            if (t.agent_id, t.task_type) == (WAIT_AGENT, SUBFLOW_TASK)
        ]
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.exists(self.keys(cid).meta)
        return [cid for cid, there in zip(ids, pipe.execute(), strict=True) if there]

    def map_base(self, workflow_id: str, map_id: str) -> str:
        """A map's prefix in the maps hash, for its current epoch (``state/maps.py``)."""
        epoch = self.redis.hget(self.keys(workflow_id).maps, MapField.EPOCH.of(map_id))
        return map_base(map_id, int(epoch or 0))

    def map_progress(self, workflow_id: str) -> list[MapProgress]:
        """How far each map of the workflow has got: counts, never its items."""
        out = []
        key = self.keys(workflow_id).maps
        for node in self.plan(workflow_id).maps:
            base = self.map_base(workflow_id, node.step_id)
            counts = [MapField.COUNT.at(base), MapField.OK.at(base), MapField.FAILED.at(base)]
            n, ok, failed = self.redis.hmget(key, counts)
            total = None if n is None else int(n)
            out.append(
                MapProgress(
                    step=node.step_id, done=int(ok or 0), failed=int(failed or 0), total=total
                )
            )
        return out

    def get_status(self, workflow_id: str) -> WorkflowStatusReport:
        k = self.keys(workflow_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.meta)
        pipe.hkeys(k.data)
        pipe.hlen(k.results)
        pipe.hvals(k.running)
        pipe.hvals(k.throttled)
        meta_raw, data_keys, n_results, running_raw, throttled_raw = pipe.execute()
        meta = Meta.decode(workflow_id, meta_raw)
        throttled = (
            [ThrottledStep.model_validate_json(t) for t in throttled_raw]
            if meta.status == WorkflowStatus.RUNNING
            else []
        )
        done, total = meta.number(F.CURRENT_STEP), meta.number(F.TOTAL_STEPS)
        running = sorted(
            (RunningStep.model_validate_json(r) for r in running_raw),
            key=lambda r: step_sort_key(r.step_id),
        )
        return WorkflowStatusReport(
            workflow_id=workflow_id,
            name=meta.get(F.NAME) or "",
            status=meta.status,
            progress=f"{done}/{total}",
            completion_percentage=round(done / max(total, 1) * 100, 1),
            task_results=n_results,
            shared_data_keys=sorted(text(key) for key in data_keys),
            current_agent=running[0].agent_id if running else None,
            running_steps=running,
            throttled_steps=sorted(throttled, key=lambda t: step_sort_key(t.step)),
            maps=self.map_progress(workflow_id),
            parent=meta.get(F.PARENT),
            parent_step=meta.get(F.PARENT_STEP),
            children=self.children(workflow_id),
            error=meta.get(F.ERROR),
            failed_step=meta.get(F.FAILED_STEP),
            created_at=meta.fields[F.CREATED_AT],
            updated_at=meta.get(F.UPDATED_AT),
            finished_at=meta.get(F.FINISHED_AT),
            version=meta.number(F.VERSION),
            compensation=meta.compensation,
        )
