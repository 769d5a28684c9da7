"""kombu's Redis transport, made to survive garbage on a queue.

Stock kombu decodes each message envelope popped from a queue with ``json.loads`` and
lets a ``ValueError`` escape into Celery's consumer, which treats it as unrecoverable
and stops the worker; valid JSON that is not an envelope (a list, a string, a number,
null, an object without properties) fails later with a ``TypeError`` or ``KeyError``, to
the same end. One malformed entry pushed onto ``agent.<id>`` would take an agent's
workers down. Here such an entry is logged with the reason and dropped, and the worker
goes on.
"""

from __future__ import annotations

import logging
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis

log = logging.getLogger("baton.transport")


class Message(virtual.Message):
    """A message built only from a kombu envelope: anything else is a ``ValueError``."""

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        properties = payload.get("properties") if isinstance(payload, dict) else None
        if not isinstance(properties, dict) or "delivery_tag" not in properties:
            what = type(payload).__name__ if not isinstance(payload, dict) else "object"
            raise ValueError(f"JSON {what} without envelope properties")
        super().__init__(payload, channel, **kwargs)  # type: ignore[no-untyped-call]


class Channel(kombu_redis.Channel):
    Message = Message

    def _create_client(self, asynchronous: bool = False) -> Any:
        # Stock kombu builds a new client for each publish to a fanout exchange (every
        # batch of task events) and each QoS call; one client (thread-safe: it takes a
        # connection from the pool per command) serves them all.
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        if self._sync_client is None:
            self._sync_client = super()._create_client()  # type: ignore[no-untyped-call]
        return self._sync_client

    _sync_client: Any = None

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))  # type: ignore[no-untyped-call]
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: not an envelope
            log.error("dropped a queue entry that is not a message envelope: %s", exc)
            raise Empty() from None

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        try:
            return super()._get(queue)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            log.error("dropped an entry of %s that is not a message envelope: %s", queue, exc)
            raise Empty() from None


class Transport(kombu_redis.Transport):
    Channel = Channel


def install() -> None:
    """Make ``redis://`` mean this transport in this process.

    Registered under kombu's own ``redis`` alias rather than set as Celery's
    ``broker_transport``, so connection URIs keep their ``redis://`` scheme (Flower, for
    one, picks its broker client by that scheme).
    """
    TRANSPORT_ALIASES["redis"] = "workers.transport:Transport"
