"""The state store: a workflow's handoff state in Redis, changed only by atomic scripts.

Reads are pipelined (one round trip); every write that touches more than one key is a
Lua script from ``orchestration/lua`` (each prefixed with ``_lib.lua``), so a crash can
never leave half a handoff, and every commit is a compare-and-set on the workflow's
status, run and the step's absence.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import redis

from orchestration.errors import WorkflowNotFound, WorkflowStateError
from orchestration.keys import WorkflowKeys, active_key, index_key, metrics_key
from orchestration.models import (
    Checkpoint,
    CompensationOutcome,
    HistoryEntry,
    RunningStep,
    TaskResult,
    TaskStatus,
    WorkflowContext,
    WorkflowStatus,
    WorkflowStatusReport,
    utcnow,
)
from orchestration.plan import Plan, PlannedTask

log = logging.getLogger("baton.store")

Outcome = Literal["continue", "complete", "fail"]
S = WorkflowStatus


def _script(name: str) -> str:
    lua = resources.files("orchestration").joinpath("lua")
    return lua.joinpath("_lib.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


def connect(url: str, retries: int = 20) -> redis.Redis[bytes]:
    """A client that rides out a Redis restart: commands are retried with backoff (20
    retries: about half a minute; redis-py reloads scripts if the server lost them)."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=retries)
    return redis.Redis.from_url(
        url,
        retry=retry,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=30,
    )


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _s(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class StepState:
    """What a step sees when it begins: the workflow's status and its state so far."""

    status: str
    shared_data: dict[str, Any]
    results: dict[str, TaskResult]
    attempt: int = 0


@dataclass(frozen=True)
class Outgoing:
    """Task messages a state change sends (built by ``workers/outbox.py``).

    ``ids`` are tracked as outstanding in the same script. When the broker is this Redis,
    the script sends ``pushes`` too: ("l", queue key, kombu envelope) to LPUSH, or ("p",
    channel, envelope) to PUBLISH (a task-sent event); else it is empty.
    """

    ids: list[str] = field(default_factory=list)
    pushes: list[tuple[str, str, str]] = field(default_factory=list)
    group: str | None = None  # the group these messages start; then ``aggregate`` is its
    aggregate: Outgoing | None = None  # aggregate's, kept until the last branch ends


NOTHING = Outgoing()


@dataclass(frozen=True)
class CommitOutcome:
    state: Literal["committed", "duplicate", "not_running", "stale", "missing"]
    version: int = 0
    status: str = ""
    aggregate_id: str = ""  # this commit ended its group's last branch: the aggregate sent
    aggregate_message: str = ""  # (its message, on the Redis broker)

    @property
    def committed(self) -> bool:
        return self.state == "committed"


@dataclass(frozen=True)
class Transition:
    old_status: str
    run: int
    paused_at: str | None
    outstanding: list[str] = field(default_factory=list)


class StateStore:
    def __init__(
        self, client: redis.Redis[bytes], *, prefix: str = "baton", retention: int = 0
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.retention = retention
        self._scripts = {
            name: client.register_script(_script(name))
            for name in ("create", "transition", "begin", "commit", "restore", "lease", "send")
        }
        self._plans: dict[str, Plan] = {}
        self._local = threading.local()

    def keys(self, workflow_id: str) -> WorkflowKeys:
        return WorkflowKeys(self.prefix, workflow_id)

    def _call(
        self,
        name: str,
        workflow_id: str,
        spec: dict[str, Any],
        *args: str,
        send: Outgoing = NOTHING,
    ) -> Any:
        k = self.keys(workflow_id)
        join = send.aggregate or NOTHING
        pushes = [*send.pushes, *join.pushes]
        spec = {
            "channel": k.events,
            "status_channel": k.statuses,
            "now": utcnow(),
            "retention": self.retention,
            "track": send.ids,
            "sends": len(send.pushes),
            "join_track": join.ids,
            "joins": len(join.pushes),
            "ops": "".join(op for op, _, _ in pushes),
            "arm": send.group,
            **spec,
        }
        spec = {key: v for key, v in spec.items() if v is not None}  # cjson.null is truthy in Lua
        return self._scripts[name](
            keys=[
                *k.all(),
                index_key(self.prefix),
                metrics_key(self.prefix),
                active_key(self.prefix),
                *(key for _, key, _ in pushes),
            ],
            args=[dumps(spec), *args, *(payload for _, _, payload in pushes)],
        )

    # ------------------------------------------------------------------ lifecycle

    def create(
        self,
        workflow_id: str,
        plan: Plan,
        *,
        start: Outgoing | None = None,
        deadline_at: float | None = None,
    ) -> bool:
        """Store a new workflow as ``created`` (or, given ``start``, as running with its first
        messages sent, in the same script); False if the id already exists."""
        entry = HistoryEntry(event="workflow_created", status="created")
        spec = {
            "workflow_id": workflow_id,
            "name": plan.name,
            "total_steps": plan.total_steps,
            "score": time.time(),
            "now": entry.timestamp,
            "start": start is not None,
            "deadline_at": deadline_at,
        }
        created = self._call(
            "create",
            workflow_id,
            spec,
            plan.model_dump_json(),
            entry.model_dump_json(exclude_none=True),
            send=start or NOTHING,
        )
        return bool(created)

    def transition(
        self,
        workflow_id: str,
        old: Sequence[WorkflowStatus],
        new: WorkflowStatus,
        *,
        event: str | None = None,
        send: Outgoing = NOTHING,
        bump_run: bool = False,
        clear_paused: bool = False,
        error: str | None = None,
        deadline_at: float | None = None,
    ) -> Transition:
        spec = {
            "from": [s.value for s in old],
            "to": new.value,
            "event": event or f"workflow_{new.value}",
            "bump_run": bump_run,
            "clear_paused": clear_paused,
            "error": error,
            "deadline_at": deadline_at,
        }
        reply = self._call("transition", workflow_id, spec, send=send)
        self._check(workflow_id, reply, old, new)
        return Transition(
            _s(reply[1]), int(reply[2]), _s(reply[3]) or None, [_s(i) for i in reply[4:]]
        )

    def restore(
        self,
        workflow_id: str,
        target: int,
        old: Sequence[WorkflowStatus],
        new: WorkflowStatus,
        *,
        event: str,
        bump_run: bool = False,
        keep_failed: bool = False,
        archive_failed: bool = False,
        compensation: CompensationOutcome | None = None,
    ) -> tuple[int, int]:
        """Restore shared state and results to checkpoint ``target``; returns (version, run)."""
        spec = {
            "from": [s.value for s in old],
            "to": new.value,
            "target": target,
            "event": event,
            "bump_run": bump_run,
            "keep_failed": keep_failed,
            "archive_failed": archive_failed,
            "compensation": compensation.model_dump_json() if compensation else None,
        }
        reply = self._call("restore", workflow_id, spec)
        self._check(workflow_id, reply, old, new)
        return int(reply[2]), int(reply[3])

    @staticmethod
    def _check(workflow_id: str, reply: list[Any], old: Sequence[S], new: S) -> None:
        state = _s(reply[0])
        if state == "missing":
            raise WorkflowNotFound(workflow_id)
        if state == "refused":
            allowed = " or ".join(s.value for s in old)
            raise WorkflowStateError(
                f"workflow {workflow_id} is {_s(reply[1])}, not {allowed}: "
                f"cannot make it {new.value}"
            )

    def plan(self, workflow_id: str) -> Plan:
        """The workflow's static plan; immutable, so cached per process."""
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
        raw = self.redis.hvals(self.keys(workflow_id).dynamic)
        return [PlannedTask.model_validate_json(v) for v in raw]

    # ------------------------------------------------------------------ steps

    def begin_step(
        self,
        workflow_id: str,
        running: RunningStep,
        run: int,
        context_keys: list[str] | None = None,
        *,
        results: Sequence[str] = (),
        inserted_before: int | None = None,
        owner: str = "",
        lease_seconds: float = 30.0,
        task_id: str | None = None,
    ) -> StepState:
        """Take the step's lease and load what it may see, in one script call.

        ``results``: the step ids whose results to load; ``inserted_before``: also those
        of steps inserted by handoffs from top-level step numbers below it.
        """
        spec = {
            "step": running.step_id,
            "running_json": running.model_dump_json(),
            "run": run,
            "owner": owner,
            "worker": running.worker or "",
            "lease_ms": int(lease_seconds * 1000),
            "task_id": task_id,
            "data_keys": context_keys,
            "fields": list(results),
            "inserted_before": inserted_before,
        }
        reply = self._call("begin", workflow_id, spec)
        status, attempt = _s(reply[0]), int(reply[1])
        if len(reply) < 4:
            return StepState(status, {}, {}, attempt)
        data = {_s(k): json.loads(v) for k, v in zip(reply[2][::2], reply[2][1::2], strict=True)}
        raw = dict(zip(reply[3][::2], reply[3][1::2], strict=True))
        return StepState(status, data, _decode_results(raw, data), attempt)

    def read_state(self, workflow_id: str, context_keys: list[str] | None = None) -> StepState:
        """The status and state as they are, without taking part in a step."""
        k = self.keys(workflow_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(k.meta, "status")
        if context_keys is None:
            pipe.hgetall(k.data)
        else:
            pipe.hmget(k.data, context_keys or ["-"])
        pipe.hgetall(k.results)
        status, data_raw, results = pipe.execute()
        if context_keys is None:
            data = _decode_data(data_raw)
        else:
            data = {key: json.loads(v) for key, v in zip(context_keys, data_raw, strict=False) if v}
        return StepState(_s(status or b"missing"), data, _decode_results(results, data))

    def lease(
        self,
        workflow_id: str,
        step_id: str,
        owner: str,
        lease_seconds: float,
        *,
        release: bool = False,
    ) -> bool:
        """Renew (or release) this execution's lease on a step; False if it no longer holds it."""
        spec = {
            "step": step_id,
            "owner": owner,
            "lease_ms": int(lease_seconds * 1000),
            "release": release,
        }
        return bool(self._call("lease", workflow_id, spec))

    def active_workflows(self) -> dict[str, float]:
        """Running (or compensating) workflows by their last progress, epoch seconds."""
        raw = self.redis.zrange(active_key(self.prefix), 0, -1, withscores=True)
        return {_s(member).split("{", 1)[1].rsplit("}", 1)[0]: score for member, score in raw}

    def touch(self, workflow_id: str) -> None:
        self.redis.zadd(active_key(self.prefix), {self.keys(workflow_id).meta: time.time()})

    def live_leases(self, workflow_id: str) -> list[str]:
        """Steps whose lease an execution is still renewing."""
        now_ms = time.time() * 1000
        raw = self.redis.hgetall(self.keys(workflow_id).steps)
        return [
            _s(f).removeprefix("lease:")
            for f, v in raw.items()
            if _s(f).startswith("lease:") and json.loads(v)["until"] > now_ms
        ]

    def commit(
        self,
        workflow_id: str,
        result: TaskResult,
        *,
        node: str,
        output_json: str,
        advance: bool,
        outcome: Outcome,
        run: int,
        task_id: str | None = None,
        owner: str = "",
        send: Outgoing = NOTHING,
        join: tuple[str, int] | None = None,
        handoff: PlannedTask | None = None,
        max_handoffs: int = 0,
    ) -> CommitOutcome:
        """Commit a step's result and send what follows it (see ``commit.lua``).

        ``join``: (group, branches) when the step ends a branch of a group: the last of
        them sends the group's aggregate."""
        entry = HistoryEntry(
            event="step_completed" if result.status == TaskStatus.COMPLETED else "step_failed",
            step=result.step_id,
            agent_id=result.agent_id,
            task_type=result.task_type,
            status=result.status.value,
            execution_time=result.execution_time,
            error=result.error,
            attempt=result.metadata.get("attempt"),
        )
        spec = {
            "step": result.step_id,
            "node": node,
            "output_key": result.output_key or "",
            "advance": advance,
            "outcome": outcome,
            "error": result.error or "",
            "run": run,
            "task_id": task_id or "",
            "owner": owner,
            "join": {"group": join[0], "total": join[1]} if join else None,
            "agent_id": result.agent_id,
            "task_type": result.task_type,
            "status": result.status.value,
            "seconds": result.execution_time,
            "now": entry.timestamp,
            "handoff_id": handoff.step_id if handoff else "",
            "max_handoffs": max_handoffs,
        }
        reply = self._call(
            "commit",
            workflow_id,
            spec,
            output_json,
            _stored(result),
            entry.model_dump_json(exclude_none=True),
            handoff.model_dump_json() if handoff else "",
            send=send,
        )
        aggregate = (_s(reply[3]), _s(reply[4])) if len(reply) > 4 else ("", "")
        return CommitOutcome(_s(reply[0]), int(reply[1] or 0), _s(reply[2]), *aggregate)  # type: ignore[arg-type]

    def send(
        self,
        workflow_id: str,
        run: int,
        send: Outgoing,
        *,
        replace: bool = False,
        ends: Sequence[str] = (),
        hold_at: str | None = None,
    ) -> tuple[str, str, str]:
        """Send messages for a running workflow (resume, retry, re-dispatch); see send.lua.

        ``ends``: when ``send`` starts a group, its branches' last steps, to count which
        have ended. ``hold_at``: if the workflow is paused, where resume is to go on from.
        Returns ('ok' or the status that refused it, and the aggregate's id and message if
        it was sent too)."""
        spec = {"run": run, "replace": replace, "ends": list(ends), "hold_at": hold_at}
        reply = self._call("send", workflow_id, spec, send=send)
        return _s(reply[0]), _s(reply[1]), _s(reply[2])

    def note(self, workflow_id: str, entry: HistoryEntry) -> None:
        """Append a history line that changes no state (an attempt, a compensation)."""
        k = self.keys(workflow_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(k.history, entry.model_dump_json(exclude_none=True))
        pipe.publish(k.events, dumps({"event": entry.event, "step": entry.step}))
        pipe.execute()

    # ------------------------------------------------------------------ reads

    def data_keys(self, workflow_id: str) -> set[str]:
        """The keys shared_data holds now."""
        return {_s(k) for k in self.redis.hkeys(self.keys(workflow_id).data)}

    def status_of(self, workflow_id: str) -> WorkflowStatus:
        raw = self.redis.hget(self.keys(workflow_id).meta, "status")
        if raw is None:
            raise WorkflowNotFound(workflow_id)
        return WorkflowStatus(raw.decode())

    def results(self, workflow_id: str) -> dict[str, TaskResult]:
        """Task results by step id (outputs kept under an output_key are not loaded)."""
        return _decode_results(self.redis.hgetall(self.keys(workflow_id).results), {})

    def versions(self, workflow_id: str) -> dict[str, int]:
        return {
            _s(k): int(v) for k, v in self.redis.hgetall(self.keys(workflow_id).versions).items()
        }

    def history(self, workflow_id: str) -> list[HistoryEntry]:
        raw = self.redis.lrange(self.keys(workflow_id).history, 0, -1)
        return [HistoryEntry.model_validate_json(h) for h in raw]

    def outstanding(self, workflow_id: str) -> set[str]:
        return {_s(i) for i in self.redis.smembers(self.keys(workflow_id).tasks)}

    def get_context(self, workflow_id: str, version: int | None = None) -> WorkflowContext:
        """The workflow's state now, or as it was at checkpoint ``version``."""
        k = self.keys(workflow_id)
        pipe = self.redis.pipeline(transaction=False)
        past = (k.versions, k.archive) if version is not None else ()  # only for the past
        for key in (k.meta, k.data, k.results, *past):
            pipe.hgetall(key)
        pipe.lrange(k.history, 0, -1)
        meta_raw, data, results, *rest = pipe.execute()
        versions_raw, archive = rest[:-1] if past else ({}, {})
        history_raw = rest[-1]
        if not meta_raw:
            raise WorkflowNotFound(workflow_id)
        meta = {_s(key): _s(v) for key, v in meta_raw.items()}
        history = [HistoryEntry.model_validate_json(h) for h in history_raw]
        current = int(meta.get("version", 0))
        if version is None or version == current:
            shared = _decode_data(data)
            task_results = _decode_results(results, shared)
        else:
            if not 0 <= version <= current:
                raise WorkflowStateError(
                    f"workflow {workflow_id} has versions 0..{current}, not {version}"
                )
            versions = {_s(f): int(v) for f, v in versions_raw.items()}
            live_data, live_results = _at_version(versions, archive, version, data, results)
            shared = _decode_data(live_data)
            task_results = _decode_results(live_results, shared)
            history = [h for h in history if h.version is None or h.version <= version]
        comp = meta.get("compensation")
        return WorkflowContext(
            workflow_id=workflow_id,
            name=meta.get("name", ""),
            created_at=meta["created_at"],
            status=WorkflowStatus(meta["status"]),
            current_step=int(meta["current_step"])
            if version in (None, current)
            else sum(
                1
                for r in task_results.values()
                if r.status == TaskStatus.COMPLETED and "." not in r.step_id
            ),
            total_steps=int(meta["total_steps"]),
            shared_data=shared,
            task_results=task_results,
            execution_history=history,
            version=current if version is None else version,
            error=meta.get("error"),
            failed_step=meta.get("failed_step"),
            updated_at=meta.get("updated_at"),
            finished_at=meta.get("finished_at"),
            run=int(meta.get("run", 1)),
            compensation=CompensationOutcome.model_validate_json(comp) if comp else None,
        )

    def get_checkpoints(self, workflow_id: str) -> list[Checkpoint]:
        """Every version of the state, oldest first (version 0: the workflow as created)."""
        history = self.history(workflow_id)
        if not history:
            raise WorkflowNotFound(workflow_id)
        first = history[0]
        points = [Checkpoint(version=0, event=first.event, timestamp=first.timestamp)]
        for h in history:
            if h.version is not None and h.event != "workflow_completed":
                points.append(
                    Checkpoint(
                        version=h.version,
                        event=h.event,
                        step=h.step,
                        agent_id=h.agent_id,
                        task_type=h.task_type,
                        changed=h.changed or [],
                        timestamp=h.timestamp,
                    )
                )
        return points

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
        meta = {_s(key): _s(v) for key, v in meta_raw.items()}
        done, total = int(meta["current_step"]), int(meta["total_steps"])
        running = sorted(
            (RunningStep.model_validate_json(r) for r in running_raw),
            key=lambda r: step_sort_key(r.step_id),
        )
        comp = meta.get("compensation")
        return WorkflowStatusReport(
            workflow_id=workflow_id,
            name=meta.get("name", ""),
            status=WorkflowStatus(meta["status"]),
            progress=f"{done}/{total}",
            completion_percentage=round(done / max(total, 1) * 100, 1),
            task_results=n_results,
            shared_data_keys=sorted(_s(key) for key in data_keys),
            current_agent=running[0].agent_id if running else None,
            running_steps=running,
            error=meta.get("error"),
            failed_step=meta.get("failed_step"),
            created_at=meta["created_at"],
            updated_at=meta.get("updated_at"),
            finished_at=meta.get("finished_at"),
            version=int(meta.get("version", 0)),
            compensation=CompensationOutcome.model_validate_json(comp) if comp else None,
        )

    def metrics(self) -> dict[str, float]:
        """The counters behind ``/metrics`` (see ``keys.metrics_key``)."""
        raw = self.redis.hgetall(metrics_key(self.prefix))
        return {_s(k): float(v) for k, v in raw.items()}

    def list_ids(self, limit: int = 50) -> list[str]:
        """Most recent workflow ids first; ids whose state has expired are dropped."""
        ids = [_s(i) for i in self.redis.zrevrange(index_key(self.prefix), 0, limit - 1)]
        pipe = self.redis.pipeline(transaction=False)
        for wid in ids:
            pipe.exists(self.keys(wid).meta)
        alive = pipe.execute()
        gone = [wid for wid, ok in zip(ids, alive, strict=True) if not ok]
        if gone:
            self.redis.zrem(index_key(self.prefix), *gone)
        return [wid for wid, ok in zip(ids, alive, strict=True) if ok]

    def prune_index(self, before: float, offset: int = 0, batch: int = 500) -> tuple[int, int]:
        """Drop from the index the workflows created before ``before`` (epoch seconds) whose
        state has expired, looking at ``batch`` of them from ``offset`` (oldest first).

        Returns (how many were dropped, the offset to look from next time: 0 once the
        old end of the index has been covered). ``list_ids`` drops expired ids only among
        the newest; without this, the index would keep an entry per workflow ever run.
        """
        key = index_key(self.prefix)
        ids = [_s(i) for i in self.redis.zrangebyscore(key, "-inf", before, offset, batch)]
        if not ids:
            return 0, 0
        pipe = self.redis.pipeline(transaction=False)
        for wid in ids:
            pipe.exists(self.keys(wid).meta)
        gone = [wid for wid, alive in zip(ids, pipe.execute(), strict=True) if not alive]
        if gone:
            self.redis.zrem(key, *gone)
        kept = len(ids) - len(gone)
        return len(gone), (offset + kept if len(ids) == batch else 0)

    def subscribe(
        self, workflow_ids: list[str], *, statuses_only: bool = False
    ) -> Generator[list[dict[str, Any]], None, None]:
        """Yield at start (no events), after changes (their events), and after a quiet second.

        ``statuses_only``: only changes of the workflows' status wake the caller.

        A pub/sub subscription, not polling: a caller re-reads state after each yield.
        The subscription is made before the first yield, so no change can slip between
        a caller's read and its wait. A quiet second also yields, for deadlines.
        Each thread keeps its pub/sub connection between calls (a new one costs a connect
        and a handshake, more than the whole wait when the workflow is done already).
        """
        channels = {
            self.keys(w).statuses if statuses_only else self.keys(w).events for w in workflow_ids
        }
        local = self._local
        pubsub = getattr(local, "pubsub", None)
        if pubsub is None:
            pubsub = local.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        kept = pubsub is local.pubsub and not getattr(local, "busy", False)
        if not kept:  # this thread's is in use by another subscription: one of its own
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        local.busy = True
        pubsub.subscribe(*channels)
        try:
            yield []
            while True:
                events: list[dict[str, Any]] = []
                message = pubsub.get_message(timeout=1.0)
                while message is not None:  # drain what else arrived; the caller reads once
                    if _s(message["channel"]) in channels:  # not a late one of a past call
                        events.append(json.loads(message["data"]))
                    message = pubsub.get_message(timeout=0)
                yield events
        finally:
            if kept:
                local.busy = False
                try:
                    pubsub.unsubscribe(*channels)
                except redis.RedisError:
                    pubsub.close()
                    local.pubsub = None
            else:
                pubsub.close()

    def close(self) -> None:
        """Close this thread's kept pub/sub connection."""
        pubsub = getattr(self._local, "pubsub", None)
        if pubsub is not None:
            pubsub.close()
            self._local.pubsub = None


def step_sort_key(step_id: str) -> tuple[int, ...]:
    """``step_2`` < ``step_2.h1`` < ``step_3.1`` < ``step_3.10``: the order steps run in."""
    parts = step_id.removeprefix("step_").replace(".h", ".").split(".")
    return tuple(int(p) for p in parts if p.isdigit())


def _decode_data(raw: dict[bytes, bytes]) -> dict[str, Any]:
    return {_s(key): json.loads(v) for key, v in raw.items()}


def _stored(result: TaskResult) -> str:
    """The TaskResult as stored: an output already under its output_key is not kept twice."""
    if result.output_key and result.status == TaskStatus.COMPLETED:
        return result.model_copy(update={"result": None}).model_dump_json()
    return result.model_dump_json()


def _decode_results(raw: dict[bytes, bytes], data: dict[str, Any]) -> dict[str, TaskResult]:
    out = {}
    for key, value in raw.items():
        r = TaskResult.model_validate_json(value)
        if r.output_key and r.status == TaskStatus.COMPLETED and r.output_key in data:
            r = r.model_copy(update={"result": data[r.output_key]})
        out[_s(key)] = r
    return dict(sorted(out.items(), key=lambda kv: step_sort_key(kv[0])))


def _at_version(
    versions: dict[str, int],
    archive: dict[bytes, bytes],
    version: int,
    data: dict[bytes, bytes],
    results: dict[bytes, bytes],
) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """Live items written at or before ``version``, plus archived items alive at it."""
    at_data = {k: v for k, v in data.items() if versions.get(f"d:{_s(k)}", 0) <= version}
    at_results = {k: v for k, v in results.items() if versions.get(f"r:{_s(k)}", 0) <= version}
    for raw_field, value in archive.items():
        item, _, span = _s(raw_field).rpartition("@")
        written, removed = (int(x) for x in span.split("-"))
        if written <= version < removed:
            kind, name = item[0], item[2:].encode()
            (at_data if kind == "d" else at_results)[name] = value
    return at_data, at_results
