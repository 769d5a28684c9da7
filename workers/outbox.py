"""Task messages sent *with* a state change, not after it (a transactional outbox).

A committing step names what goes next (the next step, a group's members, the group's
aggregate). When the broker is the state store's own Redis, the messages are encoded here
exactly as Celery and kombu's Redis transport would store them, and the commit script
pushes them onto their queues in the same atomic step as the commit: a handoff is never
committed without its next message, nor sent without its commit. It also spares each
step Celery's publish path (routing lookup, producer, sent event), which cost more than
the rest of a no-op step (docs/benchmarks.md).

On any other broker (RabbitMQ) the same signatures are published through Celery right
after the commit; a crash between the two is what the reaper recovers.

Celery's publish signals fire for inline messages too, so hooks on them (tracing, the
message-size logs) see every message: ``before_task_publish`` as the message is built
(a hook may still add headers), ``after_task_publish`` once its commit has pushed it.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.canvas import Signature
from celery.events import Event
from celery.signals import after_task_publish, before_task_publish
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset
from kombu.utils.json import dumps as _kombu_dumps
from redis.connection import parse_url

from orchestration.store import Outgoing


def kombu_dumps(value: object) -> str:
    """kombu's JSON (what its Redis transport writes), typed."""
    return str(_kombu_dumps(value))  # type: ignore[no-untyped-call]


def _envelope(
    body: object, headers: dict[str, Any], properties: dict[str, Any], delivery: dict[str, str]
) -> str:
    """A message as kombu's Redis transport stores it (``Channel._put``): JSON, base64 body."""
    return kombu_dumps(
        {
            "body": base64.b64encode(kombu_dumps(body).encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "delivery_info": delivery,
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def _same_redis(a: str, b: str) -> bool:
    """Whether two redis:// URLs name the same server and database."""
    if not (a.startswith(("redis://", "rediss://")) and b.startswith(("redis://", "rediss://"))):
        return False
    pa, pb = parse_url(a), parse_url(b)
    fields = ("host", "port", "db", "path")
    return all(pa.get(f, 0 if f == "db" else None) == pb.get(f, 0 if f == "db" else None)
               for f in fields)  # fmt: skip


class Sender:
    """Turns signatures into an :class:`Outgoing` for the store, and publishes leftovers."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        broker = str(app.conf.broker_url or "")
        self.inline = _same_redis(broker, str(app.conf.baton_redis_url))
        options = app.conf.broker_transport_options or {}
        self._key_prefix = str(options.get("global_keyprefix", ""))
        self._origin = anon_nodename()
        self._pid = os.getpid()
        # kombu's Redis fanout: PUBLISH to '/<db>.celeryev/task.sent' (its defaults).
        self.sent_events = bool(app.conf.task_send_sent_event)
        fanout = options.get("fanout_prefix", True)
        prefix = fanout if isinstance(fanout, str) else "/{db}." if fanout else ""
        db = parse_url(broker).get("db", 0) if self.inline else 0
        self._event_channel = self._key_prefix + prefix.format(db=db) + "celeryev"
        if options.get("fanout_patterns", True):
            self._event_channel += "/task.sent"
        self._built: dict[str, tuple[str, object, dict[str, object], str]] = {}

    def outgoing(self, sigs: Sequence[Signature], parent_id: str | None = None) -> Outgoing:
        """Freeze ``sigs`` (their ids are tracked before they exist) and, inline, encode them."""
        ids = [str(sig.freeze().id) for sig in sigs]
        if not self.inline:
            return Outgoing(ids=ids)
        return Outgoing(ids=ids, pushes=[p for s in sigs for p in self._encode(s, parent_id)])

    def publish(self, sigs: Sequence[Signature]) -> None:
        """After a commit sent ``sigs``: on another broker, publish them through Celery now."""
        if not self.inline:
            for sig in sigs:
                sig.apply_async()
            return
        for sig in sigs:
            built = self._built.pop(str(sig.id), None)
            if built is not None:
                name, body, headers, queue = built
                after_task_publish.send(
                    sender=name, body=body, headers=headers, exchange="", routing_key=queue
                )

    def announce(self, payload: str) -> None:
        """Fire ``after_task_publish`` for a message built elsewhere and sent by a script."""
        if after_task_publish.receivers:
            envelope = json.loads(payload)
            body = json.loads(base64.b64decode(envelope["body"]))
            headers = envelope["headers"]
            queue = envelope["properties"]["delivery_info"]["routing_key"]
            after_task_publish.send(
                sender=headers["task"], body=body, headers=headers, exchange="", routing_key=queue
            )

    def _encode(self, sig: Signature, parent_id: str | None) -> list[tuple[str, str, str]]:
        """The kombu envelope of ``sig`` as the Redis transport stores it, with its list key,
        and its task-sent event (for Flower) when Celery would send one."""
        opts = sig.options
        task_id = str(opts["task_id"])
        queue = str(opts["queue"])
        headers, properties, body, _ = self.app.amqp.as_task_v2(
            task_id,
            sig.task,
            args=tuple(sig.args),
            kwargs=dict(sig.kwargs),
            soft_time_limit=opts.get("soft_time_limit"),
            ignore_result=bool(opts.get("ignore_result", False)),
            root_id=opts.get("root_id") or parent_id or task_id,
            parent_id=parent_id,
            origin=self._origin,
            # Celery's saferepr is a tenth of a step's cost; references repr cheaply.
            argsrepr=repr(tuple(sig.args)),
            kwargsrepr=repr(dict(sig.kwargs)),
        )
        delivery = {"exchange": "", "routing_key": queue}
        if before_task_publish.receivers:
            before_task_publish.send(
                sender=sig.task, body=body, exchange="", routing_key=queue, headers=headers,
                properties=properties, declare=[], retry_policy=None,
            )  # fmt: skip
        payload = _envelope(body, headers, {**properties, "delivery_mode": 2}, delivery)
        if after_task_publish.receivers:
            if len(self._built) > 10_000:  # built for commits that were refused
                self._built.clear()
            self._built[task_id] = (sig.task, body, headers, queue)
        pushes = [("l", self._key_prefix + queue, payload)]
        if self.sent_events:
            pushes.append(("p", self._event_channel, self._sent_event(headers, queue)))
        return pushes

    def _sent_event(self, headers: dict[str, Any], queue: str) -> str:
        """A ``task-sent`` event as Celery's event dispatcher publishes it (fanout)."""
        event = Event(
            "task-sent",
            hostname=self._origin,
            utcoffset=utcoffset(),
            pid=self._pid,
            clock=self.app.clock.forward(),
            uuid=headers["id"],
            root_id=headers["root_id"],
            parent_id=headers["parent_id"],
            name=headers["task"],
            args=headers["argsrepr"],
            kwargs=headers["kwargsrepr"],
            retries=0,
            eta=None,
            expires=None,
            queue=queue,
            exchange="",
            routing_key=queue,
        )
        delivery = {"exchange": "celeryev", "routing_key": "task.sent"}
        return _envelope(event, {"hostname": self._origin}, {"delivery_mode": 1}, delivery)
