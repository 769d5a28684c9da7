"""What clients and workers agree on about the broker: queues, task names, Celery settings.

Both sides build their Celery app from :func:`celery_config`, so a message a client sends
is one a worker accepts: JSON only, routed by task name, acknowledged late. A client's
app (:func:`producer_app`) only sends; ``workers.app.create_app`` adds the tasks.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from celery import Celery

from orchestration.model.names import (
    CONTROL_QUEUE,
    ENGINE,
    agent_queue,
    agents_of,
)
from orchestration.settings import BatonSettings
from orchestration.state.connection import SENTINEL_SOCKET_TIMEOUT, sentinel_target

CONTROL_PREFIXES = frozenset({ENGINE, "celery"})  # the engine's tasks, and Celery's own


def serve_hint(queues: list[str]) -> str:
    """The command that would serve these queues (the control queue: any worker started
    without ``--no-control``)."""
    agents = agents_of(queues)
    if agents:
        return f"baton worker --agents {','.join(agents)}"
    return "baton worker (without --no-control)"


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
) -> dict[str, str]:
    """Celery router: the queue follows from the task name (``<agent>.<task>``) alone.

    The engine's tasks and Celery's own (``celery.starmap`` of ``chunks``/``starmap``,
    ``celery.chord_unlock``, ``celery.group``, ...) go to the control queue, which every
    worker consumes unless told not to. A plain Celery task beside Baton's goes by its
    name as an agent's does (``<agent>.<x>``: that agent's workers), or to the queue it
    is sent with."""
    prefix = name.split(".", 1)[0]
    return {"queue": CONTROL_QUEUE if prefix in CONTROL_PREFIXES else agent_queue(prefix)}


def celery_config(settings: BatonSettings, redis_url: str) -> dict[str, Any]:
    """Celery settings for Baton's apps (and the benchmark's bare-Celery side)."""
    # A message whose worker died unacknowledged is restored after visibility_timeout;
    # sweep for such messages often enough that the timeout is the only delay (kombu 5.7+).
    sweep = max(1, min(10, int(settings.visibility_timeout // 4)))
    transport: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": sweep,
        "unacked_restore_throttle": 1,
    }
    broker_url = settings.broker_url or redis_url
    broker, broker_options = kombu_url(broker_url, settings)
    backend, backend_options = kombu_url(redis_url, settings)
    return {
        "broker_url": broker,
        "baton_broker_url": broker_url,  # as written: the outbox compares it with redis_url
        "result_backend": backend,
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
        "broker_transport_options": {**transport, **broker_options},
        "result_backend_transport_options": {**transport, **backend_options},
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


def kombu_url(url: str, settings: BatonSettings) -> tuple[str, dict[str, Any]]:
    """``url`` as kombu and Celery's result backend spell it, and the transport options it
    needs: a ``redis+sentinel://`` URL becomes their ``sentinel://`` list (one entry per
    Sentinel, each with the data nodes' password) with the service as ``master_name``."""
    target = sentinel_target(url)
    if target is None:
        return url, {}
    auth = ""
    if target.password is not None:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
    hosts = ";".join(f"sentinel://{auth}{h}:{p}/{target.db}" for h, p in target.sentinels)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    if settings.sentinel_password is not None:
        sentinel_kwargs["password"] = settings.sentinel_password.get_secret_value()
    options = {
        "master_name": target.service,
        "sentinel_kwargs": sentinel_kwargs,
        "socket_timeout": SENTINEL_SOCKET_TIMEOUT,
        "socket_connect_timeout": 1.0,
    }
    return hosts, options


def producer_app(redis_url: str, settings: BatonSettings) -> Celery:
    """A Celery app that sends Baton's messages (and pings and revokes); it runs no task."""
    app = Celery("baton", set_as_current=False)
    app.conf.update(celery_config(settings, redis_url))
    app.conf.baton_redis_url = redis_url
    app.conf.baton_prefix = settings.key_prefix
    app.conf.baton_retention = settings.retention_seconds
    return app
