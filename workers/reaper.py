"""The reaper: no workflow stays ``running`` forever.

Messages can be lost where no acknowledgement protects them: a worker dying between a
chord's last member and its callback, a crash between a commit and the next publish.
Every ``baton worker`` runs a reaper thread; a Redis lock lets one sweep at a time. A
running workflow with no progress for ``stall_seconds`` and no live step lease is sent
on again from its first incomplete step (idempotent: committed steps are not re-run),
at most ``max_reaps`` times; then, or once past its deadline, it is failed with the
reason, through the saga like any failure. It also drops expired workflows from the
index of workflows, which would otherwise keep an entry for every workflow ever run.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from orchestration.model import HistoryEntry, WorkflowStatus
from orchestration.model.names import Event
from orchestration.settings import BatonSettings
from orchestration.state.fields import MetaField as F
from orchestration.state.keys import reaper_lock_key
from workers.engine import Engine

log = logging.getLogger("baton.reaper")
S = WorkflowStatus


class Reaper:
    def __init__(self, engine: Engine, settings: BatonSettings) -> None:
        self.engine = engine
        self.store = engine.store
        self.stall = settings.stall_seconds
        self.interval = settings.reaper_interval
        self.max_reaps = settings.max_reaps
        self.owner = uuid.uuid4().hex
        self._stop = threading.Event()
        self._prune_from = 0  # where the next sweep looks at the workflow index

    def sweep(self) -> list[tuple[str, str]]:
        """One pass over running workflows; returns what was done, for logs and tests."""
        lock = reaper_lock_key(self.store.prefix)
        ttl = int(self.interval * 2000)
        mine = self.store.redis.set(lock, self.owner, nx=True, px=ttl) or (
            self.store.redis.get(lock) == self.owner.encode()
            and self.store.redis.pexpire(lock, ttl)
        )
        if not mine:
            return []
        done: list[tuple[str, str]] = []
        now = time.time()
        if self.store.retention > 0:  # else nothing expires
            # A workflow's state expires at least ``retention`` after it was created.
            dropped, self._prune_from = self.store.index.prune(
                now - self.store.retention, self._prune_from
            )
            if dropped:
                log.info("reaper: %d expired workflows dropped from the index", dropped)
        for wid, last in self.store.index.active().items():
            try:
                action = self._check(wid, last, now)
            except Exception as exc:  # one bad workflow must not stop the sweep
                log.warning("reaper could not check %s: %s", wid, exc)
                continue
            if action:
                log.warning("reaper: %s %s", wid, action)
                done.append((wid, action))
        return done

    def _check(self, wid: str, last: float, now: float) -> str | None:
        meta_key = self.store.keys(wid).meta
        status, run, deadline, reaps = self.store.redis.hmget(
            meta_key, F.STATUS, F.RUN, F.DEADLINE_AT, F.REAPS
        )
        if status is None:
            self.store.index.forget(wid)
            return None
        state, run_no = status.decode(), int(run or 1)
        if deadline and now > float(deadline) and state == S.RUNNING:
            return self._fail(wid, run_no, "deadline exceeded")
        if now - last < self.stall or self.store.live_leases(wid):
            return None
        if state == S.COMPENSATING:
            # Its compensation chain was lost: restore and finish the failure now.
            self.engine.saga.finish_failure(wid, run_no)
            return "finished a lost compensation"
        if state != S.RUNNING:
            return None
        step = self.engine.dispatch.next_step(wid)
        if step is not None and self._backlogged(wid, step):
            return None  # its next message is most likely still queued behind others
        if int(reaps or 0) >= self.max_reaps:
            return self._fail(
                wid,
                run_no,
                f"stalled: no progress for {self.stall:.0f}s after {self.max_reaps} re-dispatches",
            )
        self.store.redis.hincrby(meta_key, F.REAPS, 1)
        self.store.index.touch(wid)
        step = self.engine.dispatch.send_on(wid, run_no, stalled=True)
        self.store.append_history(
            wid,
            HistoryEntry(
                event=Event.REAPER_REDISPATCHED,
                step=step,
                error=f"no progress for {now - last:.0f}s",
            ),
        )
        return f"re-dispatched from {step}"

    def _backlogged(self, wid: str, step: str) -> bool:
        """Whether the queues the step's messages go to hold messages: a workflow waiting
        its turn behind a backlog is slow, not stalled. Only the Redis broker can say."""
        encoder = self.engine.dispatch.outbox.encoder
        if not encoder.inline:  # a broker of its own: its queues are not visible
            return False
        pipe = self.store.redis.pipeline(transaction=False)
        for queue in self.engine.dispatch.queues_for(wid, step):
            pipe.llen(encoder.queue_key(queue))  # the transport's global_keyprefix too
        return any(pipe.execute())

    def _fail(self, wid: str, run: int, reason: str) -> str:
        self.store.transition(
            wid, [S.RUNNING], S.COMPENSATING, event=Event.WORKFLOW_REAPED, error=reason
        )
        self.engine.saga.fail_workflow(wid, run)
        return f"failed: {reason}"

    def run_forever(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception as exc:  # Redis away: try again next interval
                log.warning("reaper sweep failed: %s", exc)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="baton-reaper", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
