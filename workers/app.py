"""The Celery app, built from settings: JSON only, late acks, one task at a time.

``celery -A workers.app worker -Q agent.analyzer`` works as well as ``baton worker``:
the module attribute ``app`` is built on first access from ``BATON_*`` settings.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery, Task
from celery.signals import worker_ready

from agents.registry import AgentRegistry, load_agents
from orchestration.compiler import (
    AGGREGATE_TASK,
    CONTROL_QUEUE,
    FINISH_FAILURE_TASK,
)
from orchestration.settings import BatonSettings, get_settings
from orchestration.store import StateStore, connect
from workers.logs import configure as configure_logging
from workers.routing import route_task
from workers.runner import Engine
from workers.transport import install as install_safe_redis_transport

_engines: dict[int, Engine] = {}


def celery_config(settings: BatonSettings, redis_url: str) -> dict[str, Any]:
    # A message whose worker died unacknowledged is restored after visibility_timeout;
    # sweep for such messages often enough that the timeout is the only delay.
    sweep = max(1, min(10, int(settings.visibility_timeout // 4)))
    transport = {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": sweep,
        "unacked_restore_throttle": 1,
    }
    broker = settings.broker_url or redis_url
    install_safe_redis_transport()
    return {
        "broker_url": broker,
        "result_backend": redis_url,
        # Security: JSON only, both ways; a pickle message is refused by the worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Agent tasks are long and must survive a worker's death: ack after the work,
        # requeue if the worker is lost, and never hold more than one unstarted task.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "result_expires": settings.result_expires,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # ride out a broker restart, however long
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        # Flower sees every task by name, queue and arguments.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_routes": (route_task,),
        "task_default_queue": CONTROL_QUEUE,
        "task_create_missing_queues": True,
    }


def create_app(
    redis_url: str, settings: BatonSettings | None = None, registry: AgentRegistry | None = None
) -> Celery:
    """A Celery app bound to one Redis, with a task per registered agent task type."""
    settings = settings or get_settings()
    reg = registry or load_agents(settings.agent_modules)
    app = Celery("baton", set_as_current=False)
    app.conf.update(celery_config(settings, redis_url))
    app.conf.baton_redis_url = redis_url
    app.conf.baton_prefix = settings.key_prefix
    app.conf.baton_retention = settings.retention_seconds

    def step(
        task: Task, workflow_id: str, step_id: str, run: int = 1, *, compensate: bool = False
    ) -> str | None:
        engine = engine_for(task.app, reg)
        if compensate:
            engine.run_compensation(task, workflow_id, step_id, run)
            return None
        return engine.run_step(task, workflow_id, step_id, run)

    def aggregate(task: Task, workflow_id: str, group_id: str, run: int = 1) -> str:
        return engine_for(task.app, reg).run_aggregate(task, workflow_id, group_id, run)

    def finish_failure(task: Task, workflow_id: str, run: int) -> None:
        engine_for(task.app, reg).finish_failure(workflow_id, run)

    for tt in reg.task_types():
        app.task(name=tt.celery_name, bind=True, shared=False)(step)
    app.task(name=AGGREGATE_TASK, bind=True, shared=False, ignore_result=True)(aggregate)
    app.task(name=FINISH_FAILURE_TASK, bind=True, shared=False, ignore_result=True)(finish_failure)
    return app


def engine_for(app: Celery, reg: AgentRegistry) -> Engine:
    """The process's engine for this app, made after fork so each child has its own pool."""
    engine = _engines.get(id(app))
    if engine is None:
        client = connect(app.conf.baton_redis_url)
        store = StateStore(client, prefix=app.conf.baton_prefix, retention=app.conf.baton_retention)
        settings = get_settings()
        engine = _engines[id(app)] = Engine(
            app, store, reg, lease_seconds=settings.step_lease_seconds,
            max_output_bytes=settings.max_output_bytes,
        )  # fmt: skip
    return engine


def start_reaper(app: Celery, reg: AgentRegistry) -> None:
    """Run the reaper in this worker's main process (see ``workers/reaper.py``)."""
    from workers.reaper import Reaper

    Reaper(engine_for(app, reg), get_settings()).start()


@cache
def default_app() -> Celery:
    """The app of ``baton worker`` and ``celery -A workers.app``: settings from BATON_*."""
    from workers.embedded import resolve_redis_url

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
