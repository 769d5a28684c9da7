"""The worker's consumer: Celery's, with its task events sent in batches, and a step
message of an agent this worker has not loaded handed on or failed, never dropped.

Celery buffers a worker's task events (received, started, succeeded...) and publishes
the buffer as one ``task.multi`` message, but it flushes on the next turn of its loop
after every event: at hundreds of steps a second (the asyncio pool) that is a publish,
and a Redis client, per event. Here the buffer is flushed at most every
``EVENTS_FLUSH_SECONDS`` (and at once when it holds Celery's ``buffer_limit``, as
before), so Flower and the receivers see every event, a few milliseconds later, at a
fraction of the cost.

A worker told to consume an agent's queue without loading its module (``-Q agent.x``,
``BATON_AGENT_MODULES`` without it) takes that agent's step messages as unregistered
Celery tasks, which Celery would log and drop: the workflow would sit running until the
reaper sent the same message again, to the same end. Here such a message that came by
another queue is sent on to its agent's queue, whose workers load it; one taken from its
agent's own queue fails its step at once, naming the agent, the worker and the setting
(as a map's start does, ``workers/maps.py``).

``baton worker`` runs without Celery's *mingle*, a second at every start and reconnect
spent asking the other workers for the ids of revoked tasks: a cancelled workflow's step
does not run whether or not its message was revoked (``lua/begin.lua``). A lost broker
connection is retried on kombu's own schedule (at once, 2 s later, 4 s after that): a
faster one (every 0.2 s) brought Sentinel failovers' consumers back at 3 s, inside the
window in which a second failover's deposed primary still takes writes, and the failover
bench lost more work (see the README's "One replica or all of them").
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from celery import Celery
from celery.app.task import Context
from celery.worker.consumer import Consumer as CeleryConsumer

from orchestration.errors import BatonError, StepError, StepFailed, WorkflowNotFound
from orchestration.flow.broker import CONTROL_PREFIXES
from orchestration.model.names import agent_queue
from orchestration.settings import get_settings
from orchestration.state.limiter import Budget
from workers.engine import Engine
from workers.steps import StepRun

log = logging.getLogger("baton.worker")

#: How long a task event may wait in the buffer for others to go with it.
EVENTS_FLUSH_SECONDS = 0.05


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flush_pending = False

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = message.headers.get("task") if message.headers else None
        try:
            handled = isinstance(name, str) and unregistered(self.app, self.hostname, message)
        except Exception:
            log.exception("unregistered task %s: neither handed on nor failed", name)
            handled = False
        if not handled:
            super().on_unknown_task(body, message, exc)

    def on_send_event_buffered(self) -> None:
        # (Called on whichever thread sent the event; the timer is set on the hub's own.)
        if self.hub and not self._flush_pending:
            self._flush_pending = True
            self.hub.call_soon(self._flush_later)

    def _flush_later(self) -> None:
        self.hub.call_later(EVENTS_FLUSH_SECONDS, self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        self._flush_events()


class AgentNotLoaded(StepError):
    """A step taken from its agent's queue by a worker that has not loaded the agent."""

    retryable = False  # (another attempt would be taken the same way)


def unregistered(app: Celery, hostname: str, message: Any) -> bool:
    """Hand on or fail a step message of an agent this worker has not loaded: True if it
    was (the message is acknowledged); False to leave it to Celery, which logs and drops it
    (not a message of a live workflow's step of that agent; or a compensation's or a map
    batch's taken from its agent's own queue)."""
    name: str = message.headers["task"]
    agent_id = name.split(".", 1)[0]
    if "." not in name or agent_id in CONTROL_PREFIXES:
        return False  # (the engine's tasks and Celery's own are always registered)
    try:
        args, kwargs, _ = message.decode()
        workflow_id, step_id, run = args
    except (ValueError, TypeError):
        return False
    from agents.registry import load_agents
    from workers.app import engine_for

    engine = engine_for(app, load_agents(get_settings().agent_modules))
    try:
        if kwargs.get("map_batch"):
            task = engine.store.plan(workflow_id).map(step_id).member
        else:
            task = engine.store.task(workflow_id, step_id)
    except (WorkflowNotFound, KeyError):
        return False
    if task.agent_id != agent_id:
        return False
    queue = agent_queue(agent_id)
    if (message.delivery_info or {}).get("routing_key") != queue:
        hand_on(app, message, queue)
        log.info("%s (task %s) handed on to %s", message.headers.get("id"), name, queue)
        return True
    if kwargs.get("compensate") or kwargs.get("map_batch"):
        return False
    try:
        engine.registry.get_task(task.agent_id, task.task_type)
    except BatonError as why:
        error = (
            f"no worker loaded agent {agent_id!r} to run step {step_id}: {why} "
            f"(on {hostname}, serving {queue}; BATON_AGENT_MODULES must load it)"
        )
    else:
        return False  # (its task type is registered under another name: not a step's)
    request = Context(
        id=message.headers["id"], hostname=hostname, args=args, kwargs=kwargs,
        delivery_info=message.delivery_info,
    )  # fmt: skip
    try:
        outcome = NotLoadedRun(engine, _Taken(app, request), workflow_id, step_id, run, error)()
    except StepFailed:
        outcome = "failed"
    except _Leased:
        outcome = "leased by another execution: this copy dropped"
    log.warning("step %s of %s (task %s): %s", step_id, workflow_id, name, outcome)
    message.ack()
    return True


def hand_on(app: Celery, message: Any, queue: str) -> None:
    """Send the message, as it is, to ``queue``; then acknowledge it here."""
    q = app.amqp.queues[queue]  # (made if missing, as a client's send makes it)
    with app.producer_or_acquire() as producer:
        producer.publish(
            message.body, exchange=q.exchange, routing_key=q.routing_key, declare=[q],
            headers=message.headers, content_type=message.content_type,
            content_encoding=message.content_encoding,
            correlation_id=message.properties.get("correlation_id"),
            reply_to=message.properties.get("reply_to"), retry=True,
        )  # fmt: skip
    message.ack()


class _Leased(Exception):
    """Another execution holds the step: this copy of its message is dropped."""


class _Taken:
    """What a step's run reads of its Celery task, for a message no task here takes."""

    def __init__(self, app: Celery, request: Context) -> None:
        self.app, self.request = app, request

    def retry(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise _Leased()


class NotLoadedRun(StepRun):
    """A step whose agent this worker has not loaded: begun and committed as failed with
    ``error`` (through its saga), as if its agent had raised it."""

    def __init__(
        self, engine: Engine, ctask: Any, workflow_id: str, step_id: str, run: int, error: str
    ) -> None:
        super().__init__(engine, ctask, workflow_id, step_id, run)
        self.error = error

    def admit(self) -> list[Budget]:
        return []  # (its agent's limits are not known here)

    def run_agent(self, state: Any) -> tuple[None, BaseException, float]:
        return None, AgentNotLoaded(self.error), 0.0
