"""The wire format: Celery task messages as kombu's Redis transport stores them.

Baton's commit scripts push a step's successor onto its queue themselves (see
``orchestration/flow/outbox.py``), so they need the message exactly as stock Celery would
write it: the kombu envelope (JSON, base64 body) on the queue's list, and the
``task-sent`` event Flower listens for on the event fanout channel. Everything that
knows that format is in this module; ``tests/test_wire.py`` builds a message both ways
(here, and with a stock ``apply_async`` on a real Redis) and compares them field by field,
so a Celery or kombu release that changes the format fails a test instead of a worker.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any, NamedTuple

from celery import Celery
from celery.canvas import Signature
from celery.events import Event
from celery.signals import before_task_publish
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset
from kombu.utils.json import dumps as _kombu_dumps
from redis.connection import parse_url

from orchestration.settings import SENTINEL_SCHEME
from orchestration.state.connection import sentinel_target
from orchestration.state.scripts import Push


class Sent(NamedTuple):
    """A task message as Celery's publish signals describe it."""

    name: str
    body: object
    headers: dict[str, Any]
    queue: str


def kombu_dumps(value: object) -> str:
    """kombu's JSON (what its Redis transport writes), typed."""
    return str(_kombu_dumps(value))  # type: ignore[no-untyped-call]


def envelope(
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


def decode(payload: str) -> Sent:
    """The task message inside an envelope that :meth:`Encoder.encode` made."""
    env = json.loads(payload)
    body = json.loads(base64.b64decode(env["body"]))
    headers = env["headers"]
    return Sent(headers["task"], body, headers, env["properties"]["delivery_info"]["routing_key"])


def same_redis(a: str, b: str) -> bool:
    """Whether two redis:// URLs name the same server and database (two
    redis+sentinel:// URLs: the same service and database of the same Sentinels)."""
    if a.startswith(SENTINEL_SCHEME) or b.startswith(SENTINEL_SCHEME):
        ta, tb = sentinel_target(a), sentinel_target(b)
        return (
            ta is not None
            and tb is not None
            and ((set(ta.sentinels), ta.service, ta.db) == (set(tb.sentinels), tb.service, tb.db))
        )
    if not (a.startswith(("redis://", "rediss://")) and b.startswith(("redis://", "rediss://"))):
        return False
    pa, pb = parse_url(a), parse_url(b)
    fields = ("host", "port", "db", "path")
    return all(pa.get(f, 0 if f == "db" else None) == pb.get(f, 0 if f == "db" else None)
               for f in fields)  # fmt: skip


class Encoder:
    """Encodes signatures for the app's broker when that is the state store's Redis."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        broker = str(app.conf.get("baton_broker_url") or app.conf.broker_url or "")
        #: Whether the broker is the state Redis: only then can a script push messages.
        self.inline = same_redis(broker, str(app.conf.baton_redis_url))
        options = app.conf.broker_transport_options or {}
        #: The transport's prefix of every queue key (``global_keyprefix``).
        self.key_prefix = str(options.get("global_keyprefix", ""))
        self._origin = anon_nodename()
        self._pid = os.getpid()
        # kombu's Redis fanout: PUBLISH to '/<db>.celeryev/task.sent' (its defaults).
        self.sent_events = bool(app.conf.task_send_sent_event)
        fanout = options.get("fanout_prefix", True)
        prefix = fanout if isinstance(fanout, str) else "/{db}." if fanout else ""
        target = sentinel_target(broker)
        db = (target.db if target else parse_url(broker).get("db", 0)) if self.inline else 0
        self.event_channel = self.key_prefix + prefix.format(db=db) + "celeryev"
        if options.get("fanout_patterns", True):
            self.event_channel += "/task.sent"

    def queue_key(self, queue: str) -> str:
        """The Redis list that holds ``queue``'s messages."""
        return self.key_prefix + queue

    def encode(self, sig: Signature, parent_id: str | None) -> tuple[Sent, list[Push]]:
        """``sig`` (frozen) as Celery would publish it, and what a script pushes for it: the
        envelope onto its queue, and its task-sent event when Celery would send one."""
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
        if before_task_publish.receivers:  # a hook may still add headers
            before_task_publish.send(
                sender=sig.task, body=body, exchange="", routing_key=queue, headers=headers,
                properties=properties, declare=[], retry_policy=None,
            )  # fmt: skip
        delivery = {"exchange": "", "routing_key": queue}
        payload = envelope(body, headers, {**properties, "delivery_mode": 2}, delivery)
        pushes = [Push("l", self.queue_key(queue), payload)]
        if self.sent_events:
            pushes.append(Push("p", self.event_channel, self._sent_event(headers, queue)))
        return Sent(sig.task, body, headers, queue), pushes

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
        return envelope(event, {"hostname": self._origin}, {"delivery_mode": 1}, delivery)
