"""The worker's consumer: Celery's, with its task events sent in batches.

Celery buffers a worker's task events (received, started, succeeded...) and publishes
the buffer as one ``task.multi`` message, but it flushes on the next turn of its loop
after every event: at hundreds of steps a second (the asyncio pool) that is a publish,
and a Redis client, per event. Here the buffer is flushed at most every
``EVENTS_FLUSH_SECONDS`` (and at once when it holds Celery's ``buffer_limit``, as
before), so Flower and the receivers see every event, a few milliseconds later, at a
fraction of the cost.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

#: How long a task event may wait in the buffer for others to go with it.
EVENTS_FLUSH_SECONDS = 0.05


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flush_pending = False

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
