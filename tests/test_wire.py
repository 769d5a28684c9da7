"""The wire-format contract: Baton's hand-built task messages against stock Celery's.

Baton's commit scripts push a step's successor onto its queue themselves, with a message
built by ``orchestration/flow/wire.py`` (the kombu envelope LPUSHed onto the queue's list, and
the ``task-sent`` event PUBLISHed on kombu's event fanout channel). Nothing in Celery or
kombu checks that this copy of their format stays right: a Celery or kombu upgrade that
changes it (a new header, another envelope field, a renamed list key or channel) would
make workers reject or misread Baton's messages, or Flower lose sight of them, in
production. This test is where such an upgrade must fail instead.

Each test builds the same message both ways on the session's private redis-server: once
with :class:`~orchestration.wire.Encoder` (its pushes run as the script runs them), once
with a stock ``apply_async`` through kombu's Redis transport; then it reads both back
from Redis and compares them field by field. The fields allowed to differ are listed
exactly (with why), so any new difference fails here too.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery.canvas import Signature

from orchestration.client.embedded import RedisServer
from orchestration.definition.plan import PlannedTask
from orchestration.flow.broker import producer_app
from orchestration.flow.compiler import step_signature
from orchestration.flow.wire import Encoder, Sent, decode
from orchestration.model.names import agent_queue
from orchestration.settings import BatonSettings
from orchestration.state.scripts import Push

MISSING = object()

# Envelope properties that differ between Baton's message and stock Celery's, and why:
# - delivery_tag: a fresh uuid4 for every publish (kombu's Channel._put makes one too).
# - reply_to: stock ``Celery.send_task`` sets ``reply_to or app.thread_oid`` (the reply
#   queue of the RPC result backend); Baton leaves it '' (as_task_v2's default). Baton's
#   steps ignore their result and its result backend is Redis, so no worker reads it.
PER_PUBLISH_PROPERTIES = {"delivery_tag"}
TASK_PROPERTIES_THAT_DIFFER = PER_PUBLISH_PROPERTIES | {"reply_to"}

# task-sent event fields that differ per event: the Lamport clock (app.clock.forward()
# at each send) and the wall-clock timestamp. hostname, pid and utcoffset are the same:
# both messages come from this process.
EVENT_FIELDS_THAT_DIFFER = {"clock", "timestamp"}


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def make_app(url: str, transport: dict[str, Any] | None = None) -> Celery:
    """Baton's producer app on ``url``, the broker being that same Redis (inline)."""
    settings = BatonSettings(
        redis_url=url, broker_url=None, key_prefix=f"wire-{uuid.uuid4().hex[:8]}"
    )
    app = producer_app(url, settings)
    if transport:
        options = dict(app.conf.broker_transport_options)
        app.conf.broker_transport_options = {**options, **transport}
    return app


def signature(app: Celery, agent: str, timeout: float | None = None) -> Signature:
    """A step's message as Baton builds it (``step_signature``), frozen with a fixed id."""
    task = PlannedTask(
        step_id="step_1", index=0, agent_id=agent, task_type="work", output_key=None,
        timeout=timeout,
    )  # fmt: skip
    sig = step_signature(app, "wf-1", task, 1)
    assert sig.task == f"{agent}.work"
    assert tuple(sig.args) == ("wf-1", "step_1", 1)
    assert sig.options["queue"] == agent_queue(agent)
    assert sig.options["ignore_result"] is True
    assert sig.immutable
    sig.freeze(f"wire-task-{uuid.uuid4().hex}")
    return sig


def unpack(payload: str) -> dict[str, Any]:
    """An envelope with its body decoded (base64, then JSON)."""
    env: dict[str, Any] = json.loads(payload)
    assert env["properties"]["body_encoding"] == "base64"
    env["body"] = json.loads(base64.b64decode(env["body"]))
    return env


def differing(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    """The keys whose values differ between ``a`` and ``b`` (missing on one side counts)."""
    return {k for k in a.keys() | b.keys() if a.get(k, MISSING) != b.get(k, MISSING)}


def is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


class Events:
    """task-sent events as published on Redis, captured from the moment of creation."""

    def __init__(self, client: redis.Redis) -> None:
        self.pubsub = client.pubsub()
        # Broad on purpose: wherever stock Celery publishes the event, it is seen here, and
        # its channel is then compared with Encoder.event_channel.
        self.pubsub.psubscribe("*celeryev*")
        confirm = self.pubsub.get_message(timeout=5)
        assert confirm and confirm["type"] == "psubscribe"

    def next_for(self, task_id: str, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
        """The channel and unpacked envelope of the next task-sent event of ``task_id``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.pubsub.get_message(timeout=left)
            if not msg or msg["type"] != "pmessage":
                continue
            try:
                env = unpack(msg["data"])
            except (ValueError, KeyError, TypeError):
                continue  # not a kombu envelope: someone else's message
            body = env["body"]
            event = body if isinstance(body, dict) else {}
            if event.get("type") == "task-sent" and event.get("uuid") == task_id:
                return str(msg["channel"]), env
        raise AssertionError(f"no task-sent event for {task_id} within {timeout}s")

    def close(self) -> None:
        self.pubsub.close()


@pytest.fixture
def events(raw: redis.Redis) -> Iterator[Events]:
    ev = Events(raw)
    yield ev
    ev.close()


def run_pushes(client: redis.Redis, pushes: list[Push]) -> None:
    """What the commit script (``lua/_outbox.lua``) does with an Outgoing's pushes."""
    for push in pushes:
        if push.op == "l":
            client.lpush(push.key, push.payload)
        else:
            assert push.op == "p"
            client.publish(push.key, push.payload)


def take_only_list(client: redis.Redis, queue: str) -> tuple[str, str]:
    """The one Redis list holding ``queue``'s messages (whatever its prefix), and the one
    message on it; the list is emptied for the next writer."""
    lists = [k for k in client.scan_iter(match=f"*{queue}", count=1000) if client.type(k) == "list"]
    assert len(lists) == 1, lists
    key = lists[0]
    messages = client.lrange(key, 0, -1)
    assert len(messages) == 1, messages
    client.delete(key)
    return key, messages[0]


class Both:
    """One message built both ways, read back from Redis."""

    def __init__(
        self, app: Celery, raw: redis.Redis, events: Events, sig: Signature,
        parent_id: str | None,
    ) -> None:  # fmt: skip
        self.encoder = Encoder(app)
        assert self.encoder.inline  # baton_redis_url is the broker: scripts push messages
        assert self.encoder.sent_events
        self.task_id = str(sig.id)
        self.queue = str(sig.options["queue"])

        # Way A: Baton's encoder, its pushes run on Redis as the script runs them.
        self.sent, self.pushes = self.encoder.encode(sig, parent_id)
        assert [(p.op, p.key) for p in self.pushes] == [
            ("l", self.encoder.queue_key(self.queue)),
            ("p", self.encoder.event_channel),
        ]
        run_pushes(raw, self.pushes)
        self.baton_key, baton_raw = take_only_list(raw, self.queue)
        self.baton_channel, self.baton_event = events.next_for(self.task_id)
        self.baton = unpack(baton_raw)

        # Way B: stock Celery, through kombu's Redis transport.
        stock_options = {"parent_id": parent_id} if parent_id else {}
        result = sig.apply_async(**stock_options)
        assert result.id == self.task_id
        assert result.ignored
        self.stock_key, stock_raw = take_only_list(raw, self.queue)
        self.stock_channel, self.stock_event = events.next_for(self.task_id)
        self.stock = unpack(stock_raw)
        # ignore_result: no Celery result is written (nor would a worker write one).
        assert not raw.exists(f"celery-task-meta-{self.task_id}")


CASES = {
    # A workflow's first step: no parent, its own root.
    "first-step": {"timeout": None, "parent_id": None, "root_id": None},
    # A successor sent by its predecessor's commit, with a step timeout.
    "successor": {"timeout": 30.0, "parent_id": "wire-parent", "root_id": "wire-root"},
}


@pytest.mark.parametrize("case", list(CASES))
def test_task_message_matches_stock_celery(
    redis_server: RedisServer, raw: redis.Redis, events: Events, case: str
) -> None:
    spec = CASES[case]
    app = make_app(redis_server.url)
    try:
        sig = signature(app, f"agentx{uuid.uuid4().hex[:8]}", timeout=spec["timeout"])
        if spec["root_id"]:
            sig.set(root_id=spec["root_id"])
        both = Both(app, raw, events, sig, spec["parent_id"])
    finally:
        app.close()
    baton, stock = both.baton, both.stock

    # Where: the same list, the same event channel.
    assert both.baton_key == both.stock_key == both.queue == agent_queue(sig.task.split(".")[0])
    assert both.baton_channel == both.stock_channel == both.encoder.event_channel
    assert both.encoder.event_channel == "/0.celeryev/task.sent"

    # The envelope.
    assert baton.keys() == stock.keys()
    assert baton["content-type"] == stock["content-type"] == "application/json"
    assert baton["content-encoding"] == stock["content-encoding"] == "utf-8"
    assert baton["body"] == stock["body"]
    assert baton["body"][0] == ["wf-1", "step_1", 1]
    # Headers: all equal. ``origin`` is the sending process's nodename, the same here
    # because both ways run in this process (in production it names the committer).
    assert baton["headers"] == stock["headers"]
    headers = stock["headers"]
    assert headers["id"] == both.task_id
    assert headers["task"] == sig.task
    assert headers["ignore_result"] is True
    assert headers["parent_id"] == spec["parent_id"]
    assert headers["root_id"] == (spec["root_id"] or both.task_id)
    assert headers["timelimit"] == [None, spec["timeout"]]

    # Properties: exactly delivery_tag and reply_to differ (see the constants' comment).
    bp, sp = baton["properties"], stock["properties"]
    assert differing(bp, sp) == TASK_PROPERTIES_THAT_DIFFER
    assert is_uuid(bp["delivery_tag"]) and is_uuid(sp["delivery_tag"])
    assert bp["reply_to"] == ""
    assert sp["reply_to"] == app.thread_oid
    for field in ("delivery_info", "priority", "body_encoding", "delivery_mode"):
        assert bp[field] == sp[field], field
    assert sp["delivery_info"] == {"exchange": "", "routing_key": both.queue}
    assert sp["priority"] == 0
    assert sp["delivery_mode"] == 2  # persistent
    assert bp["correlation_id"] == sp["correlation_id"] == both.task_id

    # What encode() returned is what went on the wire.
    assert both.sent.name == sig.task
    assert json.loads(json.dumps(both.sent.body)) == stock["body"]  # JSON has no tuples
    assert both.sent.queue == both.queue
    assert json.loads(json.dumps(both.sent.headers)) == stock["headers"]


def test_task_sent_event_matches_stock_celery(
    redis_server: RedisServer, raw: redis.Redis, events: Events
) -> None:
    app = make_app(redis_server.url)
    try:
        sig = signature(app, f"agentx{uuid.uuid4().hex[:8]}")
        both = Both(app, raw, events, sig, None)
    finally:
        app.close()
    baton, stock = both.baton_event, both.stock_event

    assert both.baton_channel == both.stock_channel == both.encoder.event_channel

    # The envelope: same keys, content type, headers ({"hostname": this process's
    # nodename}); of the properties only the per-publish delivery_tag differs.
    assert baton.keys() == stock.keys()
    assert baton["content-type"] == stock["content-type"] == "application/json"
    assert baton["content-encoding"] == stock["content-encoding"] == "utf-8"
    assert baton["headers"] == stock["headers"]
    assert differing(baton["properties"], stock["properties"]) == PER_PUBLISH_PROPERTIES
    props = stock["properties"]
    assert props["delivery_info"] == {"exchange": "celeryev", "routing_key": "task.sent"}
    assert props["delivery_mode"] == 1  # transient, as Celery's event dispatcher sends
    assert props["priority"] == 0
    assert props["body_encoding"] == "base64"

    # The event: the same fields, equal except the per-event clock and timestamp.
    bb, sb = baton["body"], stock["body"]
    assert bb.keys() == sb.keys()
    assert differing(bb, sb) == EVENT_FIELDS_THAT_DIFFER
    assert isinstance(bb["clock"], int) and isinstance(sb["clock"], int)
    assert bb["clock"] < sb["clock"]  # the same app's Lamport clock, Baton's sent first
    assert isinstance(bb["timestamp"], float) and isinstance(sb["timestamp"], float)
    assert sb["type"] == "task-sent"
    assert sb["uuid"] == sb["root_id"] == both.task_id
    assert sb["name"] == sig.task
    assert sb["args"] == "('wf-1', 'step_1', 1)"
    assert sb["kwargs"] == "{}"
    assert sb["queue"] == sb["routing_key"] == both.queue
    assert sb["exchange"] == ""
    assert sb["hostname"] == stock["headers"]["hostname"]


def test_global_keyprefix(redis_server: RedisServer, raw: redis.Redis, events: Events) -> None:
    """With the transport's ``global_keyprefix``, stock Celery's list key and event channel
    carry the prefix; Baton's must be the same ones."""
    prefix = f"pfx{uuid.uuid4().hex[:6]}:"
    app = make_app(redis_server.url, {"global_keyprefix": prefix})
    try:
        sig = signature(app, f"agentx{uuid.uuid4().hex[:8]}")
        both = Both(app, raw, events, sig, None)
    finally:
        app.close()

    assert both.encoder.key_prefix == prefix
    assert both.stock_key == f"{prefix}{both.queue}"
    assert both.encoder.queue_key(both.queue) == both.stock_key
    assert both.pushes[0].key == both.baton_key == both.stock_key
    assert both.stock_channel == f"{prefix}/0.celeryev/task.sent"
    assert both.encoder.event_channel == both.stock_channel
    assert both.pushes[1].key == both.baton_channel == both.stock_channel
    # The messages themselves are as without a prefix.
    assert both.baton["body"] == both.stock["body"]
    assert both.baton["headers"] == both.stock["headers"]
    assert differing(both.baton["properties"], both.stock["properties"]) == (
        TASK_PROPERTIES_THAT_DIFFER
    )
    assert differing(both.baton_event["body"], both.stock_event["body"]) == (
        EVENT_FIELDS_THAT_DIFFER
    )


def test_decode_round_trips(redis_server: RedisServer) -> None:
    """``decode`` (used to announce a message a script sent) gives back what ``encode``
    returned: task name, body, headers and queue."""
    app = make_app(redis_server.url)
    try:
        encoder = Encoder(app)
        for parent_id in (None, "wire-parent"):
            sig = signature(app, f"agentx{uuid.uuid4().hex[:8]}", timeout=12.5)
            sent, pushes = encoder.encode(sig, parent_id)
            got = decode(pushes[0].payload)
            assert isinstance(got, Sent)
            assert got.name == sent.name == sig.task
            assert got.queue == sent.queue == sig.options["queue"]
            # JSON has no tuples: compare as the worker sees them.
            assert got.body == json.loads(json.dumps(sent.body))
            assert got.headers == json.loads(json.dumps(sent.headers))
            assert got.headers["id"] == sig.id
            assert got.headers["parent_id"] == parent_id
    finally:
        app.close()
