"""Step leases: a running step's claim, renewed while its agent works, so that a redelivered
copy of its message waits instead of running it twice (``begin.lua`` takes the lease,
``lease.lua`` renews it, the commit drops it)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from orchestration.state.store import StateStore

log = logging.getLogger("baton.leases")
#: Leases renewed in one round trip.
BEAT_BATCH = 500


class LeaseKeeper:
    """Renews the leases of the steps this process is running, so that a redelivered copy
    waits for them; one thread for the process, not one per step."""

    def __init__(self, store: StateStore, seconds: float) -> None:
        self.store, self.seconds = store, seconds
        self._held: dict[tuple[str, str], tuple[str, Callable[[], None] | None]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(
        self,
        workflow_id: str,
        step_id: str,
        owner: str,
        also: Callable[[], None] | None = None,
    ) -> Iterator[None]:
        """Renew the step's lease while the block runs; ``also`` is renewed with it (the
        step's concurrency slots)."""
        with self._lock:
            self._held[(workflow_id, step_id)] = (owner, also)
            if self._thread is None or not self._thread.is_alive():  # a fork has none
                self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop((workflow_id, step_id), None)

    def _run(self) -> None:
        tick = threading.Event()
        while not tick.wait(self.seconds / 3):
            with self._lock:
                held = list(self._held.items())
            for i in range(0, len(held), BEAT_BATCH):
                self._renew(held[i : i + BEAT_BATCH])

    def _renew(
        self, held: list[tuple[tuple[str, str], tuple[str, Callable[[], None] | None]]]
    ) -> None:
        try:
            kept = self.store.renew_leases(
                [(wf, step, owner) for (wf, step), (owner, _) in held], self.seconds
            )
        except Exception as exc:  # Redis away for a moment: the next beat retries
            log.warning("renewing %d step leases failed: %s", len(held), exc)
            return
        for ((workflow_id, step_id), (owner, also)), ok in zip(held, kept, strict=True):
            if not ok:
                with self._lock:  # lost (its commit came, or another took it over)
                    if self._held.get((workflow_id, step_id), ("",))[0] == owner:
                        del self._held[(workflow_id, step_id)]
            elif also is not None:
                try:
                    also()
                except Exception as exc:
                    log.warning("renewing the slots of %s %s failed: %s", workflow_id, step_id, exc)
