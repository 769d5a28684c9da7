"""``WorkflowOrchestrator``: the Python API, in the original design's vocabulary."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import redis

from agents.registry import AgentRegistry, load_agents
from orchestration.compiler import start
from orchestration.errors import StateStoreError, WorkflowTimeout
from orchestration.loader import DefinitionSource, load_plan
from orchestration.models import WorkflowContext, WorkflowStatus, WorkflowStatusReport
from orchestration.settings import BatonSettings, get_settings, redact
from orchestration.store import StateStore

log = logging.getLogger("baton.client")

_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")


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
        registry: AgentRegistry | None = None,
        local_workers: bool | None = None,
    ) -> None:
        from workers.app import create_app
        from workers.embedded import EmbeddedRedis, LocalWorkers

        self.settings = settings or get_settings()
        self.registry = registry or load_agents(self.settings.agent_modules)
        self._embedded: EmbeddedRedis | None = None
        self._workers: LocalWorkers | None = None
        url = redis_url or self.settings.redis_url
        if url is None:
            self._embedded = EmbeddedRedis(self.settings.home)
            url = self._embedded.ensure()
            local_workers = True if local_workers is None else local_workers
        self.redis_url = url
        self.redis = redis.Redis.from_url(url)
        self.store = StateStore(
            self.redis, prefix=self.settings.key_prefix, retention=self.settings.retention_seconds
        )
        self.app = create_app(url, self.settings, self.registry)
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
        Given a ``workflow_id`` that already exists, returns it unchanged (safe retries).
        """
        plan = load_plan(definition, self.registry)
        wid = workflow_id or str(uuid.uuid4())
        if not _ID.match(wid):
            from orchestration.errors import DefinitionError

            raise DefinitionError([("workflow_id", "use 1-128 of A-Z a-z 0-9 _ - . :")])
        try:
            created = self.store.create(wid, plan)
        except redis.RedisError as exc:
            raise StateStoreError(f"cannot reach Redis at {redact(self.redis_url)}: {exc}") from exc
        log.info(
            "%s workflow %s (%s, %d steps)",
            "created" if created else "found",
            wid,
            plan.name,
            plan.total_steps,
        )
        return wid

    def start_workflow(self, workflow_id: str) -> None:
        """Enqueue the first segment of a ``created`` workflow."""
        plan = self.store.plan(workflow_id)
        self.store.transition(workflow_id, WorkflowStatus.CREATED, WorkflowStatus.RUNNING)
        try:
            start(self.app, plan, workflow_id)
        except Exception:
            # Nothing was enqueued: put the workflow back so it can be started again.
            self.store.transition(workflow_id, WorkflowStatus.RUNNING, WorkflowStatus.CREATED)
            raise

    def run_workflow(self, definition: DefinitionSource, workflow_id: str | None = None) -> str:
        wid = self.create_workflow(definition, workflow_id)
        if self.store.status_of(wid) == WorkflowStatus.CREATED:
            self.start_workflow(wid)
        return wid

    # ------------------------------------------------------------------ reading

    def get_workflow_status(self, workflow_id: str) -> WorkflowStatusReport:
        return self.store.get_status(workflow_id)

    def get_context(self, workflow_id: str) -> WorkflowContext:
        return self.store.get_context(workflow_id)

    def list_workflows(self, limit: int = 50) -> list[WorkflowStatusReport]:
        return [self.store.get_status(w) for w in self.store.list_ids(limit)]

    def watch(
        self, workflow_ids: list[str], timeout: float | None = None
    ) -> Iterator[list[WorkflowStatusReport]]:
        """Yield the workflows' statuses now and after every change, until all are terminal."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in self.store.subscribe(workflow_ids):
            reports = [self.store.get_status(w) for w in workflow_ids]
            yield reports
            if all(r.status.is_terminal for r in reports):
                return
            if deadline is not None and time.monotonic() > deadline:
                raise WorkflowTimeout(f"workflows still running after {timeout}s: {workflow_ids}")

    def wait(self, workflow_id: str, timeout: float | None = None) -> WorkflowContext:
        """Block until the workflow completes or fails; woken by Redis pub/sub, not polling."""
        for _ in self.watch([workflow_id], timeout):
            pass
        return self.get_context(workflow_id)

    # ------------------------------------------------------------------ resources

    def close(self) -> None:
        """Stop what this orchestrator started (local workers, embedded Redis)."""
        if self._workers:
            self._workers.stop()
            self._workers = None
        if self._embedded:
            self._embedded.stop()
            self._embedded = None
        self.redis.close()

    def __enter__(self) -> WorkflowOrchestrator:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"redis": redact(self.redis_url), "prefix": self.settings.key_prefix}
