"""What running steps emit (``step.emit``, ``step.progress``), on its way to Redis.

A step hands each event to a queue and goes on: one thread per worker process writes
them, in order, batched into one round trip (``StateStore.record_events``), so an agent
coroutine never waits on Redis to emit, and a slow reader of the stream never slows a
step (readers read the stream; nothing here waits for them). Before a step commits, its
worker flushes, so a step's last emits come before its ``committed`` event.
"""

from __future__ import annotations

import logging
import queue
import threading

from agents.base import EventSink
from orchestration.state.store import StateStore

log = logging.getLogger("baton.events")
Item = tuple[str, str, str, str]  # workflow_id, step_id, event, data JSON
BATCH = 500


class EventWriter:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._queue: queue.Queue[Item] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def sink(self, workflow_id: str) -> EventSink:
        """The sink of one step of ``workflow_id`` (``StepInput.emit`` calls it)."""

        def send(step_id: str, event: str, data_json: str) -> None:
            self._ensure_thread()
            self._queue.put((workflow_id, step_id, event, data_json))

        return send

    def flush(self) -> None:
        """Wait until everything emitted so far is written (before a commit)."""
        if self._thread is not None:
            self._queue.join()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():  # (a fork has none)
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="events", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.store.record_events(batch)
            except Exception as exc:  # the client retried already: these events are lost
                log.warning("%d emitted events not written: %s", len(batch), exc)
            finally:
                for _ in batch:
                    self._queue.task_done()
