"""The Celery app, built from settings: JSON only, late acks, one task at a time.

``celery -A workers.app worker -Q agent.analyzer`` works as well as ``baton worker``:
the module attribute ``app`` is built on first access from ``BATON_*`` settings.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import redis
from celery import Celery, Task
from celery.exceptions import Reject
from celery.signals import worker_ready

from agents.registry import AgentRegistry, load_agents
from orchestration.client.embedded import resolve_redis_url
from orchestration.definition.plan import PlannedMap
from orchestration.errors import StateStoreError
from orchestration.flow.broker import producer_app
from orchestration.model.names import AGGREGATE_TASK, BRANCH_TASK, FINISH_FAILURE_TASK, MAP_TASK
from orchestration.model.waits import SUBFLOW_TASK, WAIT_AGENT, WAIT_TASK
from orchestration.settings import BatonSettings, get_settings
from orchestration.state.connection import connect, replicas_of
from orchestration.state.store import StateStore
from workers.aio import LoopRedis
from workers.aio import register as register_asyncio_pool
from workers.branches import run_branch
from workers.engine import Engine
from workers.groups import run_aggregate
from workers.logs import configure as configure_logging
from workers.map_batches import MapBatchRun
from workers.maps import run_map_aggregate, run_map_start
from workers.reaper import Reaper
from workers.steps import StepRun
from workers.subflows import SubflowRun
from workers.transport import install as install_safe_redis_transport
from workers.waits import TimerSweep, WaitRun

log = logging.getLogger("baton.worker")
R = TypeVar("R")
WAIT_CELERY_NAME = f"{WAIT_AGENT}.{WAIT_TASK}"
SUBFLOW_CELERY_NAME = f"{WAIT_AGENT}.{SUBFLOW_TASK}"
_engines: dict[int, Engine] = {}
_engines_lock = threading.Lock()
register_asyncio_pool()


def redelivered(body: Callable[..., R]) -> Callable[..., R]:
    """A task body whose state write the store did not take for sure (no primary answered
    within ``BATON_FAILOVER_TIMEOUT``, or too few replicas acknowledged it): its message is
    not acknowledged but given back to its queue, to be delivered again. Every write is a
    compare-and-set, so the redelivery finds what did land and does only the rest."""

    @functools.wraps(body)
    def task(ctask: Task, *args: Any, **kwargs: Any) -> R:
        try:
            return body(ctask, *args, **kwargs)
        except (StateStoreError, redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("%s %s: given back to its queue: %s", ctask.name, ctask.request.id, exc)
            raise Reject(str(exc), requeue=True) from exc

    return task


def create_app(
    redis_url: str, settings: BatonSettings | None = None, registry: AgentRegistry | None = None
) -> Celery:
    """A Celery app bound to one Redis, with a task per registered agent task type."""
    settings = settings or get_settings()
    reg = registry or load_agents(settings.agent_modules)
    install_safe_redis_transport()
    app = producer_app(redis_url, settings)
    app.conf.worker_consumer = "workers.consumer:Consumer"  # task events sent in batches

    def step(
        task: Task,
        workflow_id: str,
        step_id: str,
        run: int = 1,
        *,
        compensate: bool = False,
        reserved: bool = False,  # set when a limit put it back with its rate slot held
        map_batch: bool = False,  # a batch of the map step_id (it takes the next in line)
    ) -> str | None:
        engine = engine_for(task.app, reg)
        if compensate:
            engine.saga.run_compensation(task, workflow_id, step_id, run)
            return None
        if map_batch:
            return MapBatchRun(engine, task, workflow_id, step_id, run)()
        kind = {WAIT_CELERY_NAME: WaitRun, SUBFLOW_CELERY_NAME: SubflowRun}.get(task.name, StepRun)
        return kind(engine, task, workflow_id, step_id, run)()

    def aggregate(task: Task, workflow_id: str, group_id: str, run: int = 1) -> str:
        engine = engine_for(task.app, reg)
        node = engine.store.plan(workflow_id).node(group_id)
        if isinstance(node, PlannedMap):
            return run_map_aggregate(engine, task, workflow_id, node, run)
        return run_aggregate(engine, task, workflow_id, group_id, run)

    def branch(task: Task, workflow_id: str, branch_id: str, run: int = 1) -> str:
        return run_branch(engine_for(task.app, reg), task, workflow_id, branch_id, run)

    def start_map(
        task: Task, workflow_id: str, map_id: str, run: int = 1, *, reset: bool = False
    ) -> str:
        return run_map_start(engine_for(task.app, reg), task, workflow_id, map_id, run, reset)

    def finish_failure(task: Task, workflow_id: str, run: int) -> None:
        engine_for(task.app, reg).saga.finish_failure(workflow_id, run)

    for tt in reg.task_types():
        # max_retries=None: Baton counts a step's attempts itself; Celery's retries here are
        # waits (a limit's turn, a lease held elsewhere), which must not run out.
        # baton_async: the asyncio pool runs its steps on the event loop's thread.
        app.task(
            name=tt.celery_name, bind=True, shared=False, max_retries=None,
            baton_async=tt.is_async,
        )(redelivered(step))  # fmt: skip
    control: dict[str, Callable[..., Any]] = {
        AGGREGATE_TASK: aggregate, FINISH_FAILURE_TASK: finish_failure, MAP_TASK: start_map,
        BRANCH_TASK: branch,
    }  # fmt: skip
    for name, body in control.items():
        app.task(name=name, bind=True, shared=False, ignore_result=True)(redelivered(body))
    return app


def engine_for(app: Celery, reg: AgentRegistry) -> Engine:
    """The process's engine for this app, made after fork so each child has its own pool."""
    engine = _engines.get(id(app))
    if engine is not None:
        return engine
    with _engines_lock:  # the asyncio pool's threads may all ask at once
        return _engines.get(id(app)) or _make_engine(app, reg)


def _make_engine(app: Celery, reg: AgentRegistry) -> Engine:
    settings = get_settings()
    client = connect(app.conf.baton_redis_url, client=LoopRedis, settings=settings)  # (batched)
    store = StateStore(
        client, prefix=app.conf.baton_prefix, retention=app.conf.baton_retention,
        replicas=replicas_of(settings),
    )  # fmt: skip
    engine = _engines[id(app)] = Engine(
        app, store, reg, lease_seconds=settings.step_lease_seconds,
        max_output_bytes=settings.max_output_bytes,
    )  # fmt: skip
    return engine


def start_reaper(app: Celery, reg: AgentRegistry) -> None:
    """Run the reaper and the timer sweep in this worker's main process (see
    ``workers/reaper.py``, ``workers/waits.py``)."""
    engine = engine_for(app, reg)
    Reaper(engine, get_settings()).start()
    TimerSweep(engine).start()


@cache
def default_app() -> Celery:
    """The app of ``baton worker`` and ``celery -A workers.app``: settings from BATON_*."""
    settings = get_settings()
    configure_logging(settings.log_format)
    app = create_app(resolve_redis_url(settings))
    worker_ready.connect(
        lambda **_: start_reaper(app, load_agents(settings.agent_modules)), weak=False
    )
    return app


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        return default_app()
    raise AttributeError(name)
