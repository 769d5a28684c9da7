"""The state store: a workflow's handoff state in Redis, changed only by atomic scripts.

Every write that touches more than one key is one of the Lua scripts (their typed
contract is ``orchestration/state/scripts.py``), so a crash can never leave half a handoff,
and every commit is a compare-and-set on the workflow's status, run and the step's
absence. The reads are :class:`StateReader`'s, which this extends.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TypeVar

import redis

from orchestration.definition.plan import Plan
from orchestration.errors import WorkflowNotFound, WorkflowStateError
from orchestration.model import (
    CompensationOutcome,
    HistoryEntry,
    RunningStep,
    WorkflowStatus,
    dumps,
)
from orchestration.model.names import STREAM_MAXLEN, Event
from orchestration.state.commit import CommitRequest
from orchestration.state.connection import NO_REPLICAS, Replicas
from orchestration.state.decode import StepState, decode_results
from orchestration.state.fields import STREAM_FIELD, MetaField, StepField
from orchestration.state.keys import WorkflowKeys, due_member
from orchestration.state.reads import StateReader
from orchestration.state.scripts import (
    NOTHING,
    BeginReply,
    BeginSpec,
    CommitReply,
    CreateReply,
    CreateSpec,
    LeaseReply,
    LeaseSpec,
    Outgoing,
    ParkReply,
    ParkSpec,
    RestoreReply,
    RestoreSpec,
    Scripts,
    SendReply,
    SendSpec,
    StatusRefusal,
    TransitionReply,
    TransitionSpec,
)

S = WorkflowStatus


class StateStore(StateReader):
    """Reads and atomic writes of the workflows under one key prefix.

    ``retention``: seconds a finished workflow's keys live (0: forever).
    """

    def __init__(
        self,
        client: redis.Redis[bytes],
        *,
        prefix: str = "baton",
        retention: int = 0,
        replicas: Replicas = NO_REPLICAS,
    ) -> None:
        super().__init__(client, prefix=prefix)
        self.retention = retention
        self.scripts = Scripts(client, prefix, retention, replicas)

    # ------------------------------------------------------------------ lifecycle

    def create(
        self,
        workflow_id: str,
        plan: Plan,
        *,
        start: Outgoing | None = None,
        deadline_at: float | None = None,
        data: dict[str, Any] | None = None,
        parent: tuple[str, str, int] | None = None,
    ) -> bool:
        """Store a new workflow as ``created`` (or, given ``start``, as running with its first
        messages sent, in the same script); False if the id already exists with this plan,
        ``WorkflowStateError`` if it exists with another. ``data``: its shared_data from
        the start; ``parent``: (workflow, step, run) whose sub-workflow it is."""
        entry = HistoryEntry(event=Event.WORKFLOW_CREATED, status=S.CREATED)
        spec = CreateSpec(
            workflow_id=workflow_id,
            name=plan.name,
            total_steps=plan.total_steps,
            score=time.time(),
            now=entry.timestamp,
            start=start is not None,
            deadline_at=deadline_at,
            data={k: dumps(v) for k, v in (data or {}).items()},
            **(
                {"parent": parent[0], "parent_step": parent[1], "parent_run": parent[2],
                 "parent_due": due_member(*parent)}
                if parent else {}
            ),
        )  # fmt: skip
        raw = self.scripts.call(
            "create",
            self.keys(workflow_id),
            spec,
            plan.model_dump_json(),
            entry.model_dump_json(exclude_none=True),
            send=start or NOTHING,
        )
        reply = CreateReply.decode(raw)
        if reply.conflict:
            raise WorkflowStateError(
                f"workflow {workflow_id} exists with a different definition: give the new one "
                "another id (the same definition again returns the existing workflow)"
            )
        return reply.created

    def transition(
        self,
        workflow_id: str,
        old: Sequence[WorkflowStatus],
        new: WorkflowStatus,
        *,
        event: Event,
        send: Outgoing = NOTHING,
        bump_run: bool = False,
        clear_paused: bool = False,
        error: str | None = None,
        deadline_at: float | None = None,
    ) -> TransitionReply:
        """Make the workflow ``new`` if it is one of ``old`` (else ``WorkflowStateError``),
        sending ``send`` with the change."""
        spec = TransitionSpec(
            from_=[s.value for s in old],
            to=new.value,
            event=event,
            bump_run=bump_run,
            clear_paused=clear_paused,
            error=error,
            deadline_at=deadline_at,
        )
        raw = self.scripts.call("transition", self.keys(workflow_id), spec, send=send)
        return _allowed(workflow_id, TransitionReply.decode(raw), old, new)

    def restore(
        self,
        workflow_id: str,
        target: int,
        old: Sequence[WorkflowStatus],
        new: WorkflowStatus,
        *,
        event: Event,
        bump_run: bool = False,
        keep_failed: bool = False,
        archive_failed: bool = False,
        compensation: CompensationOutcome | None = None,
    ) -> RestoreReply:
        """Restore shared state and results to checkpoint ``target`` (see restore.lua); a
        target that is no checkpoint is a ``WorkflowStateError`` naming the valid range."""
        spec = RestoreSpec(
            from_=[s.value for s in old],
            to=new.value,
            target=target,
            event=event,
            bump_run=bump_run,
            keep_failed=keep_failed,
            archive_failed=archive_failed,
            compensation=compensation.model_dump_json() if compensation else None,
        )
        raw = self.scripts.call("restore", self.keys(workflow_id), spec)
        reply = _allowed(workflow_id, RestoreReply.decode(raw), old, new)
        if reply.state == "invalid":
            raise WorkflowStateError(
                f"workflow {workflow_id} has checkpoints 0..{reply.version}, not {target}"
            )
        return reply

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
        spec = BeginSpec(
            step=running.step_id,
            running_json=running.model_dump_json(),
            run=run,
            owner=owner,
            worker=running.worker or "",
            lease_ms=int(lease_seconds * 1000),
            task_id=task_id,
            data_keys=context_keys,
            fields=list(results),
            inserted_before=inserted_before,
        )
        reply = BeginReply.decode(self.scripts.call("begin", self.keys(workflow_id), spec))
        return StepState(
            reply.status, reply.data, decode_results(reply.results, reply.data), reply.attempt
        )

    def lease(
        self,
        workflow_id: str,
        step_id: str,
        owner: str,
        lease_seconds: float,
        *,
        release: bool = False,
        uncount: bool = False,
    ) -> bool:
        """Renew (or release) this execution's lease on a step; False if it no longer holds it.
        ``uncount``: (released) its attempt is not counted, the agent never having started."""
        spec = LeaseSpec(
            step=step_id,
            owner=owner,
            lease_ms=int(lease_seconds * 1000),
            release=release,
            uncount=uncount,
        )
        return LeaseReply.decode(self.scripts.call("lease", self.keys(workflow_id), spec)).held

    def renew_leases(
        self, held: Sequence[tuple[str, str, str]], lease_seconds: float
    ) -> list[bool]:
        """Renew the leases of many running steps, ``(workflow_id, step_id, owner)`` each,
        in one round trip (a worker's heartbeat: an asyncio pool may hold a thousand);
        for each, False if its execution no longer holds it."""
        pipe = self.redis.pipeline(transaction=False)
        for workflow_id, step_id, owner in held:
            spec = LeaseSpec(step=step_id, owner=owner, lease_ms=int(lease_seconds * 1000))
            self.scripts.call("lease", self.keys(workflow_id), spec, client=pipe)
        return [LeaseReply.decode(raw).held for raw in pipe.execute()]

    def commit(self, request: CommitRequest, send: Outgoing = NOTHING) -> CommitReply:
        """Commit a step's result and send what follows it (``send``; see ``commit.lua``)."""
        raw = self.scripts.call(
            "commit", self.keys(request.workflow_id), *request.script_args(), send=send
        )
        return CommitReply.decode(raw)

    def run_of(self, workflow_id: str) -> int:
        raw = self.redis.hget(self.keys(workflow_id).meta, MetaField.RUN)
        if raw is None:
            raise WorkflowNotFound(workflow_id)
        return int(raw)

    def park(
        self, workflow_id: str, step_id: str, name: str, run: int, task_id: str, due: float | None
    ) -> ParkReply:
        """Park a wait step that found no signal (``park.lua``); ``due``: its timer (epoch
        seconds), if it has one."""
        spec = ParkSpec(
            step=step_id,
            name=name,
            run=run,
            task_id=task_id,
            due_ms=int(due * 1000) if due is not None else 0,
            due_member=due_member(workflow_id, step_id, run) if due is not None else "",
        )
        return ParkReply.decode(self.scripts.call("park", self.keys(workflow_id), spec))

    def send(
        self,
        workflow_id: str,
        run: int,
        send: Outgoing,
        *,
        replace: bool = False,
        ends: Sequence[str] = (),
        hold_at: str | None = None,
    ) -> SendReply:
        """Send messages for a workflow running in ``run`` (resume, retry, re-dispatch).

        ``replace``: what was outstanding before is superseded. ``ends``: when ``send``
        starts a group, its branches' last steps, to count which have ended. ``hold_at``:
        if the workflow is paused, where resume is to go on from."""
        spec = SendSpec(run=run, replace=replace, ends=list(ends), hold_at=hold_at)
        return SendReply.decode(self.scripts.call("send", self.keys(workflow_id), spec, send=send))

    def append_history(self, workflow_id: str, entry: HistoryEntry) -> None:
        """Append a history line that changes no state (an attempt, a compensation)."""
        k = self.keys(workflow_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(k.history, entry.model_dump_json(exclude_none=True))
        message = {"event": entry.event, "step": entry.step, "error": entry.error}
        self._record(pipe, k, dumps({k: v for k, v in message.items() if v is not None}))
        pipe.execute()

    def record_events(self, events: Sequence[tuple[str, str, str, str]]) -> None:
        """What running steps emitted, ``(workflow_id, step_id, event, data JSON)`` each, in
        order and in one round trip: into each workflow's stream and onto its channel; the
        latest ``emitted`` and ``progress`` of a step also where the dashboard looks."""
        pipe = self.redis.pipeline(transaction=False)
        for workflow_id, step_id, event, data in events:
            k = self.keys(workflow_id)
            message = f'{{"event":{dumps(event)},"step":{dumps(step_id)},"data":{data}}}'
            self._record(pipe, k, message)
            if event in (StepField.EMITTED, StepField.PROGRESS):
                pipe.hset(k.steps, StepField(event).of(step_id), message)
        pipe.execute()

    @staticmethod
    def _record(pipe: redis.client.Pipeline[bytes], k: WorkflowKeys, message: str) -> None:
        pipe.xadd(k.stream, {STREAM_FIELD: message}, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.publish(k.events, message)


R = TypeVar("R", bound=StatusRefusal)


def _allowed(workflow_id: str, reply: R, old: Sequence[WorkflowStatus], new: WorkflowStatus) -> R:
    """The reply of a status-checked script, or the error its refusal means."""
    if reply.state == "missing":
        raise WorkflowNotFound(workflow_id)
    if reply.state == "refused":
        allowed = " or ".join(s.value for s in old)
        raise WorkflowStateError(
            f"workflow {workflow_id} is {reply.status}, not {allowed}: cannot make it {new.value}"
        )
    return reply
