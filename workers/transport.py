# mypy: disable-error-code="no-untyped-call"
"""kombu's Redis transport, made to survive garbage on a queue, and to take messages in
batches.

Stock kombu decodes each message envelope popped from a queue with ``json.loads`` and
lets a ``ValueError`` escape into Celery's consumer, which treats it as unrecoverable
and stops the worker; valid JSON that is not an envelope (a list, a string, a number,
null, an object without properties) fails later with a ``TypeError`` or ``KeyError``, to
the same end. One malformed entry pushed onto ``agent.<id>`` would take an agent's
workers down. Here such an entry is logged with the reason and dropped, and the worker
goes on.

Stock kombu also takes one message per ``BRPOP``, then records it as unacked in a
pipeline of its own: two round trips and a turn of the consumer's loop per message,
which caps a worker at a few hundred steps a second however wide its pool. Here, while a
queue has a backlog, a ``BRPOP``'s message comes with as many more from the same queue
as the worker's prefetch window still allows (``RPOP key count``, at most
``FETCH_BATCH``), all recorded as unacked in one pipeline before any is handed to
Celery: the same window, the same redelivery, two round trips per batch. A queue has a
backlog when its ``BRPOP`` was answered at once, or the last batch found more; a queue
that is mostly empty (a chain's one message at a time) costs no extra round trip.
(``BLMPOP ... COUNT`` would take a batch in one, but needs Redis 7, and the embedded
server is 6.2.)
"""

from __future__ import annotations

import logging
import threading
import time
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from orchestration.state.connection import FailoverConnection

log = logging.getLogger("baton.transport")
#: The most messages taken from a queue in one round trip (the prefetch window bounds it).
FETCH_BATCH = 100
#: A BRPOP answered sooner than this (s) found its queue not empty: a backlog.
AT_ONCE = 0.002


class Message(virtual.Message):
    """A message built only from a kombu envelope: anything else is a ``ValueError``."""

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        self.check(payload)
        super().__init__(payload, channel, **kwargs)

    @staticmethod
    def check(payload: Any) -> None:
        properties = payload.get("properties") if isinstance(payload, dict) else None
        if not isinstance(properties, dict) or "delivery_tag" not in properties:
            what = type(payload).__name__ if not isinstance(payload, dict) else "object"
            raise ValueError(f"JSON {what} without envelope properties")


class Taken:
    """The delivery tags this process took and has not yet acknowledged or rejected.

    When the broker connection is lost (a failover), Celery's consumer drops the messages
    it held but had not started, and a message whose task ends meanwhile cannot be
    acknowledged on the dead channel. kombu would give them back only after
    ``visibility_timeout`` (an hour by default). The first consumer on the new connection
    gives back every one at once instead (:meth:`_Batching.basic_consume`): a copy of a
    step still running finds its lease held, a copy of one that committed finds it done.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tags: set[str] = set()

    def add(self, tag: str) -> None:
        with self._lock:
            self._tags.add(tag)

    def discard(self, tag: str) -> None:
        with self._lock:
            self._tags.discard(tag)

    def take_all(self) -> list[str]:
        with self._lock:
            tags, self._tags = list(self._tags), set()
        return tags


TAKEN = Taken()


class QoS(kombu_redis.QoS):
    """kombu's unacked bookkeeping, with room for a batch recorded ahead (``recorded``),
    and the tags this process holds kept in :data:`TAKEN`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: set[str] = set()

    def append(self, message: Any, delivery_tag: str) -> None:
        TAKEN.add(delivery_tag)
        if delivery_tag in self.recorded:  # written with its batch: only the local state
            self.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        super().ack(delivery_tag)
        TAKEN.discard(delivery_tag)  # (not if the ack failed: then it is given back)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().reject(delivery_tag, requeue)
        TAKEN.discard(delivery_tag)

    def record(self, envelopes: list[dict[str, Any]]) -> None:
        """Write a batch's unacked entries (what kombu's ``append`` writes for one) in
        one transaction, before any of them is delivered."""
        now = time.time()
        with self.pipe_or_acquire() as pipe:
            for env in envelopes:
                tag = env["properties"]["delivery_tag"]
                info = env["properties"].get("delivery_info") or {}
                pipe.zadd(self.unacked_index_key, {tag: now})
                pipe.hset(
                    self.unacked_key,
                    tag,
                    dumps([env, info.get("exchange"), info.get("routing_key")]),
                )
                self.recorded.add(tag)
            pipe.execute()


class _Batching(kombu_redis.Channel):
    """What this transport changes of kombu's Redis channel, for its plain and its Sentinel
    channel alike (mixed in before the kombu class)."""

    Message = Message
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._backlog: dict[str, bool] = {}  # queue key -> its last batch found more
        super().__init__(*args, **kwargs)

    def _create_client(self, asynchronous: bool = False) -> Any:
        # Stock kombu builds a new client for each publish to a fanout exchange (every
        # batch of task events) and each QoS call; one client (thread-safe: it takes a
        # connection from the pool per command) serves them all.
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self._sync_client is None:
            self._sync_client = super()._create_client()
        return self._sync_client

    _sync_client: Any = None

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        self._no_ack = (self._no_ack - {queue}) | ({queue} if no_ack else set())
        self._give_back_taken()
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _give_back_taken(self) -> None:
        """Messages this process held when its last connection was lost, back to their
        queues' heads (see :class:`Taken`); nothing on a first start."""
        tags = TAKEN.take_all()
        given = 0
        for tag in tags:
            try:
                self.qos.restore_by_tag(tag, leftmost=True)
                given += 1
            except self.connection_errors as exc:  # gone again: the visibility timeout's
                log.warning("could not give back message %s: %s", tag, exc)
        if given:
            log.warning(
                "gave back %d message(s) this worker held when its broker connection was "
                "lost (a copy of a step that went on meanwhile finds it leased or done)",
                given,
            )

    _no_ack: set[str] = set()  # queues consumed without acks: nothing of theirs is unacked

    def _brpop_read(self, **options: Any) -> bool:
        # kombu's own, up to the first message; then the batch (see the module's docstring).
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next turn reconnects
                raise
            if not reply:
                raise Empty()
            key = bytes_to_str(reply[0])
            queue = key.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            at_once = time.monotonic() - (self._brpop_sent_at or 0.0) < AT_ONCE
            items = [reply[1], *self._more(key, at_once)]
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()
        envelopes = []
        for item in items:
            try:
                env = loads(bytes_to_str(item))
                Message.check(env)
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, no envelope
                log.error("dropped a queue entry that is not a message envelope: %s", exc)
                continue
            envelopes.append(env)
        if len(envelopes) > 1 and queue not in self._no_ack:
            self.qos.record(envelopes)
        for env in envelopes:
            self.connection._deliver(env, queue)
        if not envelopes:
            raise Empty()
        return True

    def _more(self, key: str, at_once: bool) -> list[bytes]:
        """More messages from the queue key a BRPOP just took one from, while it has a
        backlog, as many as the prefetch window allows (none if it allows no more)."""
        if not (at_once or self._backlog.get(key)):
            return []
        window = self.qos.can_consume_max_estimate()
        n = min(FETCH_BATCH if window is None else window, FETCH_BATCH) - 1
        if n <= 0:
            return []
        with self.conn_or_acquire() as client:
            more: list[bytes] = client.rpop(key, n) or []
        self._backlog[key] = bool(more)
        return more

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        try:
            return super()._get(queue)
        except ValueError as exc:
            log.error("dropped an entry of %s that is not a message envelope: %s", queue, exc)
            raise Empty() from None


class Channel(_Batching):
    pass


class SentinelChannel(_Batching, kombu_redis.SentinelChannel):
    """On Sentinel: each new connection asks the Sentinels for the primary, so after a
    failover the consumer's reconnect reaches the new one; a node refusing writes while
    the failover settles is a lost connection (``FailoverConnection``), not an error that
    stops the worker."""

    connection_class = FailoverConnection


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def install() -> None:
    """Make ``redis://`` (and ``sentinel://``) mean this transport in this process.

    Registered under kombu's own ``redis`` alias rather than set as Celery's
    ``broker_transport``, so connection URIs keep their ``redis://`` scheme (Flower, for
    one, picks its broker client by that scheme).
    """
    TRANSPORT_ALIASES["redis"] = "workers.transport:Transport"
    TRANSPORT_ALIASES["sentinel"] = "workers.transport:SentinelTransport"
