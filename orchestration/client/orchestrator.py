"""``WorkflowOrchestrator``: the Python API, in the original design's vocabulary."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

import redis

from orchestration.client.agents import load_catalog
from orchestration.client.embedded import EmbeddedRedis, LocalWorkers
from orchestration.definition import DefinitionSource, compile_plan, read_definition
from orchestration.definition.catalog import Catalog
from orchestration.definition.plan import Plan, PlannedTask
from orchestration.errors import (
    AmbiguousWorkflowId,
    DefinitionError,
    InputTooLarge,
    LimitError,
    SignalError,
    SignalTooLarge,
    StateStoreError,
    WorkflowNotFound,
    WorkflowTimeout,
)
from orchestration.flow.broker import producer_app, serve_hint
from orchestration.flow.dispatch import ALL_SENT, Dispatcher
from orchestration.flow.resume import commit_wait
from orchestration.model import (
    WORKFLOW_ID,
    Checkpoint,
    StreamEvent,
    WaitingStep,
    WorkflowContext,
    WorkflowStatus,
    WorkflowStatusReport,
)
from orchestration.model.bounds import iso_at, over_input_cap
from orchestration.model.limits import Limit, LimitValues
from orchestration.model.names import Event
from orchestration.model.waits import SUBFLOW_TASK, WAIT_AGENT, WaitParams, check_payload, child_id
from orchestration.settings import BatonSettings, get_settings, redact
from orchestration.state.connection import connect
from orchestration.state.definitions import Definitions
from orchestration.state.limiter import BudgetUse, Limiter
from orchestration.state.scripts import SignalSpec
from orchestration.state.store import StateStore

log = logging.getLogger("baton.client")
S = WorkflowStatus
#: ``wait`` asks whether anyone serves the workflow's queues once it has waited this long.
UNSERVED_CHECK_AFTER = 10.0


class WorkflowOrchestrator:
    """Create, start and follow workflows that run on Celery workers through Redis.

    ``redis_url``: the Redis holding state (and, unless ``BATON_BROKER_URL`` says
    otherwise, the broker). None means ``BATON_REDIS_URL``, else an embedded redis-server
    under ``BATON_HOME`` — in which case local worker processes for every agent are
    started too (``local_workers=False`` to skip), so a script works with no setup.
    Any process given the same URL sees the same workflows.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: BatonSettings | None = None,
        registry: Catalog | None = None,
        local_workers: bool | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.registry = registry or load_catalog(self.settings.agent_modules)
        self._embedded: EmbeddedRedis | None = None
        self._workers: LocalWorkers | None = None
        url = redis_url or self.settings.redis_url
        if url is None:
            self._embedded = EmbeddedRedis(self.settings.home)
            url = self._embedded.ensure()
            local_workers = True if local_workers is None else local_workers
        self.redis_url = url
        # A caller is told quickly when Redis is away (workers, not callers, wait it out).
        self.redis = connect(url, retries=3)
        self.store = StateStore(
            self.redis, prefix=self.settings.key_prefix, retention=self.settings.retention_seconds
        )
        self.app = producer_app(url, self.settings)
        self.dispatch = Dispatcher(self.app, self.store)
        self.definitions = Definitions(self.redis, self.settings.key_prefix)
        self.limiter = Limiter(self.redis, self.settings.key_prefix)
        if local_workers:
            self._workers = LocalWorkers(
                url, [[]], concurrency=2, log_dir=self.settings.home / "logs"
            )
            self._workers.start(self.app)
        log.info("orchestrator on %s", redact(url))

    # ------------------------------------------------------------------ lifecycle

    def create_workflow(self, definition: DefinitionSource, workflow_id: str | None = None) -> str:
        """Validate and store a workflow as ``created``; nothing is enqueued.

        An invalid definition raises ``DefinitionError`` before anything is written.
        Given a ``workflow_id`` that already exists, returns it unchanged (safe retries), or
        raises ``WorkflowStateError`` if it was created from a different definition.
        """
        return self._create(self._plan(definition), workflow_id)[0]

    def _plan(self, definition: DefinitionSource) -> Plan:
        """The checked plan, registered sub-workflows named in it copied in; its parameters
        within ``BATON_MAX_INPUT_BYTES`` (else ``InputTooLarge``)."""
        plan = compile_plan(self.definitions.resolve(read_definition(definition)), self.registry)
        tasks = [*plan.tasks.values(), *(m.member for m in plan.maps)]
        if why := over_input_cap([t.parameters for t in tasks], self.settings.max_input_bytes):
            raise InputTooLarge([("parameters", why)])
        return plan

    def register_workflow(self, definition: DefinitionSource) -> str:
        """Register a definition under its name, for ``{"workflow": "<name>"}`` steps of
        workflows created after; checked first (``DefinitionError``), returns the name."""
        self._plan(definition)
        return self.definitions.register(definition)

    def _create(
        self, plan: Plan, workflow_id: str | None, *, start: bool = False
    ) -> tuple[str, bool]:
        wid = workflow_id or str(uuid.uuid4())
        if not WORKFLOW_ID.match(wid):
            raise DefinitionError([("workflow_id", "use 1-128 of A-Z a-z 0-9 _ - . :")])
        sending = self.dispatch.prepare(self.dispatch.first(plan, wid)) if start else None
        try:
            created = self.store.create(
                wid,
                plan,
                start=sending.outgoing if sending else None,
                deadline_at=self._deadline(plan) if sending else None,
            )
        except redis.RedisError as exc:
            raise StateStoreError(f"cannot reach Redis at {redact(self.redis_url)}: {exc}") from exc
        log.info(
            "%s workflow %s (%s, %d steps)",
            "created" if created else "found",
            wid,
            plan.name,
            plan.total_steps,
        )
        if created and sending is not None:
            self.dispatch.follow(ALL_SENT, sending)
        return wid, created

    @staticmethod
    def _deadline(plan: Plan) -> float | None:
        return time.time() + plan.deadline_seconds if plan.deadline_seconds else None

    def start_workflow(self, workflow_id: str, plan: Plan | None = None) -> None:
        """Enqueue the first segment of a ``created`` workflow."""
        plan = plan or self.store.plan(workflow_id)
        sending = self.dispatch.prepare(self.dispatch.first(plan, workflow_id))
        self.store.transition(
            workflow_id,
            [S.CREATED],
            S.RUNNING,
            event=Event.WORKFLOW_STARTED,
            send=sending.outgoing,
            deadline_at=self._deadline(plan),
        )
        try:
            self.dispatch.follow(ALL_SENT, sending)
        except Exception:
            # Nothing was enqueued: put the workflow back so it can be started again.
            self.store.transition(workflow_id, [S.RUNNING], S.CREATED, event=Event.START_FAILED)
            raise

    def cancel_workflow(self, workflow_id: str) -> None:
        """Stop for good: queued tasks are revoked; a running step's commit will be refused."""
        t = self.store.transition(
            workflow_id,
            [S.CREATED, S.RUNNING, S.PAUSED, S.WAITING],
            S.CANCELLED,
            event=Event.WORKFLOW_CANCELLED,
        )
        if t.outstanding:
            self.app.control.revoke(t.outstanding)
        for child in self._children(workflow_id, S.CREATED, S.RUNNING, S.PAUSED, S.WAITING):
            self.cancel_workflow(child)

    def pause_workflow(self, workflow_id: str) -> None:
        """Stop before the next step; steps already running finish and commit."""
        self.store.transition(
            workflow_id, [S.RUNNING, S.WAITING], S.PAUSED, event=Event.WORKFLOW_PAUSED
        )
        for child in self._children(workflow_id, S.RUNNING, S.WAITING):
            self.pause_workflow(child)

    def _children(self, workflow_id: str, *among: WorkflowStatus) -> list[str]:
        """Its sub-workflows whose status is one of ``among`` (cancel and pause reach them)."""
        return [c for c in self.store.children(workflow_id) if self.store.status_of(c) in among]

    def resume_workflow(self, workflow_id: str) -> None:
        """Continue a paused workflow from exactly where it stopped."""
        t = self.store.transition(
            workflow_id,
            [S.PAUSED],
            S.RUNNING,
            event=Event.WORKFLOW_RESUMED,
            clear_paused=True,
        )
        if t.paused_at:  # something stopped at the pause; else the in-flight step goes on
            self.dispatch.send_on(workflow_id, t.run)
        for child in self._children(workflow_id, S.PAUSED):
            self.resume_workflow(child)

    def retry_workflow(self, workflow_id: str) -> None:
        """Restart a failed workflow from its last good checkpoint: the steps committed there
        are not run again (those its saga undid, and the failed one, are)."""
        self.dispatch.retry(workflow_id)

    def rollback(self, workflow_id: str, to_version: int) -> None:
        """Restore checkpoint ``to_version`` of a stopped workflow; it is then ``paused``.

        ``to_version`` must be a checkpoint: 0 to the latest version (``get_checkpoints``);
        anything else is a ``WorkflowStateError`` naming the range, and nothing changes.

        Later versions stay readable (``get_context(id, version=N)``); ``resume_workflow``
        continues from the restored state.
        """
        self.store.restore(
            workflow_id,
            to_version,
            [S.FAILED, S.PAUSED, S.COMPLETED],
            S.PAUSED,
            event=Event.ROLLED_BACK,
            bump_run=True,
        )

    # ------------------------------------------------------------------ signals

    def signal(
        self,
        workflow_id: str,
        name: str,
        payload: Any = None,
        signal_id: str | None = None,
        *,
        by: str | None = None,
    ) -> str:
        """Send signal ``name`` to a workflow: its wait step's output is ``payload``.

        The payload is checked against the wait's schema first (``SignalError`` naming the
        field; nothing changes). If the workflow waits there, one script commits it (a
        checkpoint and a history entry with ``by`` and when) and sends the workflow on:
        returns ``"applied"``. If the wait is not reached yet, the signal is kept for it:
        ``"kept"``. The same ``signal_id`` again changes nothing: ``"duplicate"``. A name
        the workflow never waits for is refused.
        """
        if why := over_input_cap(payload, self.settings.max_input_bytes):
            raise SignalTooLarge(f"signal {name!r} refused: its payload is {why}")
        plan = self.store.plan(workflow_id)

        def waits_in(tasks: Iterable[PlannedTask]) -> dict[str, PlannedTask]:
            return {
                t.parameters["name"]: t
                for t in tasks
                if t.agent_id == WAIT_AGENT and t.parameters.get("name")
            }

        waits = waits_in(plan.tasks.values())
        if name not in waits:  # one its agents inserted at run time (WaitFor)?
            waits |= waits_in(self.store.inserted(workflow_id))
        if name not in waits:
            known = ", ".join(sorted(waits)) or "no signal at all"
            raise SignalError(
                f"workflow {workflow_id} never waits for {name!r} (it waits for {known})"
            )
        task = waits[name]
        check_payload(name, WaitParams.model_validate(task.parameters).payload_schema, payload)
        for _ in range(3):  # (a retry or rollback may change the run in between)
            run = self.store.run_of(workflow_id)
            parked = self.store.parked(workflow_id).get(task.step_id) or {}
            reply, _ = commit_wait(
                self.app, self.store, self.dispatch, workflow_id, task.step_id, run,
                SignalSpec(name=name, id=signal_id or "", by=by or ""),
                output=payload, since=parked.get("since"),
            )  # fmt: skip
            if reply.state != "stale":
                break
        outcomes = {"committed": "applied", "kept": "kept", "duplicate_signal": "duplicate"}
        if reply.state in outcomes:
            return outcomes[reply.state]
        why = {
            "duplicate": f"{name!r} was signalled already (its wait step has committed)",
            "already_signalled": f"a signal {name!r} is kept already, for when it is reached",
            "not_running": f"it is {reply.status}",
            "missing": "it does not exist",
        }.get(reply.state, reply.state)
        raise SignalError(f"signal {name!r} refused by workflow {workflow_id}: {why}")

    def waiting(self, limit: int = 200) -> list[WaitingStep]:
        """What each waiting workflow waits for (a signal or a time), since and until when."""
        out: list[WaitingStep] = []
        for wid in self.store.index.list_ids(limit):
            for step_id, w in self.store.parked(wid).items():
                child = self.store.task(wid, step_id).task_type == SUBFLOW_TASK
                out.append(
                    WaitingStep(
                        workflow_id=wid,
                        step_id=step_id,
                        name=w.get("name") or None,
                        since=w.get("since", ""),
                        until=iso_at(w["due_ms"] / 1000) if w.get("due_ms") and not child else None,
                        child=child_id(wid, step_id) if child else None,
                    )
                )
        return out

    def run_workflow(self, definition: DefinitionSource, workflow_id: str | None = None) -> str:
        """Validate, create and start a workflow: one script stores it and sends its first
        messages. Given an existing ``workflow_id``, starts it only if it is ``created``."""
        plan = self._plan(definition)
        wid, created = self._create(plan, workflow_id, start=True)
        if not created and self.store.status_of(wid) == WorkflowStatus.CREATED:
            self.start_workflow(wid, plan)
        return wid

    # ------------------------------------------------------------------ reading

    def resolve_id(self, id_or_prefix: str) -> str:
        """The workflow id that ``id_or_prefix`` names, like git names commits: the id
        itself, or the one id it begins. ``WorkflowNotFound`` if none,
        ``AmbiguousWorkflowId`` (listing them) if several."""
        if not WORKFLOW_ID.match(id_or_prefix):
            raise WorkflowNotFound(id_or_prefix)
        if self.redis.exists(self.store.keys(id_or_prefix).meta):
            return id_or_prefix
        found = self.store.index.starting_with(id_or_prefix, limit=6)
        if not found:
            raise WorkflowNotFound(id_or_prefix)
        if len(found) > 1:
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise AmbiguousWorkflowId(
                f"{id_or_prefix!r} begins more than one workflow id: {shown}; give more of it"
            )
        return found[0]

    def get_workflow_status(self, workflow_id: str) -> WorkflowStatusReport:
        return self.store.get_status(workflow_id)

    def get_context(self, workflow_id: str, version: int | None = None) -> WorkflowContext:
        """The workflow's state, or the state as of checkpoint ``version``."""
        return self.store.get_context(workflow_id, version)

    def get_checkpoints(self, workflow_id: str) -> list[Checkpoint]:
        """Every committed version of the state: step, agent, time and what changed."""
        return self.store.get_checkpoints(workflow_id)

    def list_workflows(self, limit: int = 50) -> list[WorkflowStatusReport]:
        return [self.store.get_status(w) for w in self.store.index.list_ids(limit)]

    def watch(
        self, workflow_ids: list[str], timeout: float | None = None
    ) -> Iterator[list[WorkflowStatusReport]]:
        """Yield the workflows' statuses now and after every change, until all are terminal."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in self.store.channels.subscribe(workflow_ids):
            reports = [self.store.get_status(w) for w in workflow_ids]
            yield reports
            if all(r.status.is_terminal for r in reports):
                return
            if deadline is not None and time.monotonic() > deadline:
                raise WorkflowTimeout(f"workflows still running after {timeout}s: {workflow_ids}")

    def stream(
        self, workflow_id: str, since: str | None = None, timeout: float | None = None
    ) -> Iterator[StreamEvent]:
        """Yield the workflow's events in order, from the beginning or after the event id
        ``since``, as they happen, until the workflow ends (completed, failed, cancelled).

        Steps starting, what they emit and their progress, commits, status changes: all
        kept in a bounded Redis Stream per workflow (``names.STREAM_MAXLEN``), so a reader
        that reconnects with the last id it saw misses nothing; it expires with the
        workflow. A slow reader never slows a step.
        """
        status = self.store.status_of(workflow_id)  # WorkflowNotFound for an unknown id
        deadline = None if timeout is None else time.monotonic() + timeout
        last = since or "0-0"
        while True:
            events = self.store.events(workflow_id, last, block=1.0)
            for event in events:
                last = event.id
                yield event
            if events and events[-1].ends and self.store.status_of(workflow_id).is_terminal:
                return  # (an end followed by more events was a run that was retried)
            if not events:
                # Nothing after ``last``: if it has ended, every event has been read (the
                # script that ends a workflow writes its last event in the same step).
                status = self.store.status_of(workflow_id)
                if status.is_terminal:
                    return
                if deadline is not None and time.monotonic() > deadline:
                    raise WorkflowTimeout(
                        f"workflow {workflow_id} still {status.value} after {timeout}s"
                    )

    # ------------------------------------------------------------------ limits

    def limits(self) -> list[BudgetUse]:
        """Each declared limit, its values now, and per budget (key): steps running under
        it, steps waiting for it, and when its rate admits the next."""
        return self.limiter.usage(self.registry.declared_limits())

    def set_limit(
        self, name: str, *, rate: str | None = None, concurrency: int | None = None
    ) -> LimitValues:
        """Change a limit for every worker at once, without restarting anything: ``rate``
        ``"120/m"`` (``"none"`` lifts it), ``concurrency`` 20 (0 lifts it)."""
        return self.limiter.set(self._limit(name), rate, concurrency)

    def reset_limit(self, name: str) -> bool:
        """Back to the values the agent declares; False if none were set."""
        return self.limiter.reset(self._limit(name).name)

    def _limit(self, name: str) -> Limit:
        declared = self.registry.declared_limits()
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none is declared"
            raise LimitError(f"no limit named {name!r} (limits: {known})")
        return declared[name]

    def unserved_queues(self, workflow_id: str, timeout: float = 1.0) -> list[str]:
        """The queues a running workflow waits on that no live worker consumes, asked of
        the workers by a broadcast that takes ``timeout`` seconds."""
        if self.store.status_of(workflow_id) != S.RUNNING:
            return []
        step = self.dispatch.next_step(workflow_id)
        if step is None:
            return []
        queues = self.dispatch.queues_for(workflow_id, step)
        replies = self.app.control.inspect(timeout=timeout).active_queues() or {}
        served = {q["name"] for consumed in replies.values() for q in consumed}
        return [q for q in queues if q not in served]

    def wait(
        self,
        workflow_id: str,
        timeout: float | None = None,
        until: Iterable[str] = (),
    ) -> WorkflowContext:
        """Block until the workflow completes, fails or is cancelled (or reaches one of the
        statuses ``until`` names too, e.g. ``until=("waiting",)``).

        Woken by pub/sub, not by polling: it listens to the workflow's status channel only
        (not every step's events), and reads the state again when an event says the status
        became a terminal one (and once a quiet second).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        check_workers_at = time.monotonic() + UNSERVED_CHECK_AFTER
        terminal = {s.value for s in WorkflowStatus if s.is_terminal} | set(until)
        for events in self.store.channels.subscribe([workflow_id], statuses_only=True):
            if check_workers_at and time.monotonic() > check_workers_at:
                check_workers_at = 0  # once: the answer takes a broadcast
                self._warn_if_unserved(workflow_id)
            if events and not any(e.get("status") in terminal for e in events):
                continue
            if events or self.store.status_of(workflow_id).value in terminal:
                ctx = self.get_context(workflow_id)
                if ctx.status.value in terminal:  # (else it was retried meanwhile: wait on)
                    return ctx
            if deadline is not None and time.monotonic() > deadline:
                raise WorkflowTimeout(f"workflow {workflow_id} still not finished after {timeout}s")
        raise AssertionError("unreachable: the subscription never ends")

    def _warn_if_unserved(self, workflow_id: str) -> None:
        unserved = self.unserved_queues(workflow_id)
        if unserved:
            log.warning(
                "workflow %s waits on %s, which no live worker consumes: start one with `%s`",
                workflow_id,
                ", ".join(unserved),
                serve_hint(unserved),
            )

    # ------------------------------------------------------------------ resources

    def close(self) -> None:
        """Stop what this orchestrator started (local workers, embedded Redis)."""
        if self._workers:
            self._workers.stop()
            self._workers = None
        if self._embedded:
            self._embedded.stop()
            self._embedded = None
        self.store.channels.close()
        self.redis.close()

    def __enter__(self) -> WorkflowOrchestrator:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
