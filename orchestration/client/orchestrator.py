"""``WorkflowOrchestrator``: the Python API, in the original design's vocabulary."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from types import TracebackType

import redis
from kombu.exceptions import OperationalError

from orchestration.client.agents import load_catalog
from orchestration.client.controls import Controls
from orchestration.client.embedded import EmbeddedRedis, LocalWorkers
from orchestration.definition import DefinitionSource, compile_plan, read_definition
from orchestration.definition.catalog import Catalog
from orchestration.definition.plan import Plan
from orchestration.errors import (
    AmbiguousWorkflowId,
    DefinitionError,
    InputTooLarge,
    StateStoreError,
    WorkflowNotFound,
    WorkflowTimeout,
)
from orchestration.flow.broker import producer_app, serve_hint
from orchestration.flow.dispatch import ALL_SENT, Dispatcher
from orchestration.model import (
    WORKFLOW_ID,
    Checkpoint,
    StreamEvent,
    WorkflowContext,
    WorkflowStatus,
    WorkflowStatusReport,
)
from orchestration.model.bounds import over_input_cap
from orchestration.model.names import Event
from orchestration.settings import BatonSettings, get_settings, redact
from orchestration.state.connection import connect, replicas_of
from orchestration.state.definitions import Definitions
from orchestration.state.limiter import Limiter
from orchestration.state.store import StateStore

log = logging.getLogger("baton.client")
S = WorkflowStatus
#: ``wait`` asks whether anyone serves the workflow's queues once it has waited this long.
UNSERVED_CHECK_AFTER = 10.0


def _inside(workflow_id: str, ids: set[str]) -> bool:
    """Whether ``workflow_id`` is a sub-workflow's (at any depth) of one of ``ids``."""
    return any(c == "." and workflow_id[:i] in ids for i, c in enumerate(workflow_id) if i)


class WorkflowOrchestrator(Controls):
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
        self.redis = connect(url, retries=3, settings=self.settings)
        self.store = StateStore(
            self.redis,
            prefix=self.settings.key_prefix,
            retention=self.settings.retention_seconds,
            replicas=replicas_of(self.settings),
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

    def register_workflow(self, definition: DefinitionSource, replace: bool = False) -> str:
        """Register a definition under its name, for ``{"workflow": "<name>"}`` steps of
        workflows created after; checked first (``DefinitionError``), returns the name.
        A different definition already registered under that name is kept, and this one
        refused with a ``DefinitionError`` naming the name, unless ``replace`` (workflows
        created already keep theirs); the same definition again is accepted."""
        self._plan(definition)
        return self.definitions.register(definition, replace=replace)

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
        itself (always, whatever longer ids it begins), or the one id it begins. A
        sub-workflow's id is its parent's and more (``<parent>.<step>``): a prefix that
        begins a parent and only its own sub-workflows names the parent.
        ``WorkflowNotFound`` if none, ``AmbiguousWorkflowId`` (listing them) if several."""
        if not WORKFLOW_ID.match(id_or_prefix):
            raise WorkflowNotFound(id_or_prefix)
        if self.redis.exists(self.store.keys(id_or_prefix).meta):
            return id_or_prefix
        # Every id it begins (the index is scanned whole anyway), its sub-workflows set apart.
        found = self.store.index.starting_with(id_or_prefix, limit=sys.maxsize)
        every = set(found)
        tops = [wid for wid in found if not _inside(wid, every)]
        if not tops:
            raise WorkflowNotFound(id_or_prefix)
        if len(tops) > 1:
            shown = ", ".join(tops[:5]) + (", ..." if len(tops) > 5 else "")
            raise AmbiguousWorkflowId(
                f"{id_or_prefix!r} begins more than one workflow id: {shown}; give more of it"
            )
        return tops[0]

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
        try:
            unserved = self.unserved_queues(workflow_id)
        except (redis.ConnectionError, redis.TimeoutError, OperationalError) as exc:
            # (a broadcast on a connection a failover closed: the wait goes on, the next
            # quiet second asks again on a new one)
            log.info("could not ask the workers which queues they consume: %s", exc)
            return
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
