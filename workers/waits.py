"""What workers do with waits: reach one (``WaitRun``: commit the signal that came first,
or park it), and fire the timers that are due (``TimerSweep``: sleeps and timeouts).

A parked wait holds nothing but its record: no message, no worker, no lease. The timer
sweep runs in every worker's main process; one claim per due timer (``DueTimers``) and
the compare-and-set commit make it fire once, however many workers sweep.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from agents.base import StepOutput
from orchestration.flow.resume import commit_wait
from orchestration.model import dumps
from orchestration.model.waits import SUBFLOW_TASK, OnTimeoutDefault, WaitParams
from orchestration.state.decode import StepState
from orchestration.state.scripts import SignalSpec
from orchestration.state.timers import DueTimers
from workers.engine import Engine
from workers.steps import StepRun, outcome_word
from workers.subflows import settle_subflow

log = logging.getLogger("baton.waits")


def slept(due: float) -> dict[str, Any]:
    return {"woke_at": datetime.fromtimestamp(due, UTC).isoformat()}


class WaitRun(StepRun):
    """A worker reaching a wait step: its signal came first (commit it), its sleep is
    over (commit that), or it parks."""

    def _run(self) -> str:
        state = self.begin()
        if isinstance(state, str):
            return state
        params = WaitParams.model_validate(self.task.parameters)
        name = params.name or ""
        kept = self.store.kept_signal(self.workflow_id, name) if name else None
        if kept is None:
            due = params.due(time.time())
            if name or due is None or due > time.time():
                reply = self.store.park(
                    self.workflow_id, self.step_id, name, self.run_no,
                    self.ctask.request.id or "", due,
                )  # fmt: skip
                if reply.state == "parked":
                    log.info("%s of %s waits (%s)", self.step_id, self.workflow_id, name or due)
                    return outcome_word("waiting")
                if reply.state != "signalled":
                    return self._not_run(reply.state)
                kept = self.store.kept_signal(self.workflow_id, name)
        if kept is None:  # a sleep already over when it was reached
            due = params.due(time.time()) or time.time()
            encoded = dumps(slept(due))
        else:
            encoded, _meta = kept
            self.consume = name
        return self._commit(state, StepOutput(json.loads(encoded), encoded))

    def _commit(self, state: StepState, output: StepOutput) -> str:
        result, _ = self.decide(output, None, 0.0, state.attempt)
        nxt = self.what_follows(result, None)
        reply = self.commit(result, output, None, nxt)
        if not reply.committed:
            return self._not_run(reply.state)
        self.send_on(reply, result)
        return outcome_word("completed")


class TimerSweep:
    """Fires the due timers of parked waits, in a thread of the worker's main process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.timers = DueTimers(engine.store.redis, engine.store.prefix)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="timers")
        self._idle = threading.Event()  # never set: waits until the next timer is due

    def start(self) -> None:
        threading.Thread(target=self._run, name="timers", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                fired = self.sweep()
                if not fired:
                    nxt = self.timers.next_in()
                    self._idle.wait(0.25 if nxt is None else min(0.25, max(0.01, nxt)))
            except Exception as exc:  # Redis away for a moment: sweep again shortly
                log.warning("timer sweep failed: %s", exc)
                self._idle.wait(1.0)

    def sweep(self) -> int:
        """Fire what is due, a few at once (each is a commit's round trips: overlapping
        them keeps a burst of timers on time)."""
        due = self.timers.claim()
        list(self._pool.map(self._fire_logged, due))
        return len(due)

    def _fire_logged(self, timer: tuple[str, str, int]) -> None:
        try:
            self.fire(*timer)
        except Exception as exc:
            log.warning("timer of %s %s not fired: %s", timer[0], timer[1], exc)

    def fire(self, workflow_id: str, step_id: str, run: int) -> None:
        store = self.engine.store
        parked = store.parked(workflow_id).get(step_id)
        if parked is None or parked.get("run") != run:
            self.timers.drop(workflow_id, step_id, run)  # committed, cancelled or rolled back
            return
        task = store.task(workflow_id, step_id)
        if task.task_type == SUBFLOW_TASK:  # its child ended, or it looks in on it
            settle_subflow(self.engine, workflow_id, step_id, run)
            return
        params = WaitParams.model_validate(task.parameters)
        output: Any = None
        error = None
        if params.name is None:
            output = slept(parked["due_ms"] / 1000)
        elif params.on_timeout == "fail":
            error = f"wait_for {params.name!r} timed out after {params.timeout:g}s"
        elif isinstance(params.on_timeout, OnTimeoutDefault):
            output = params.on_timeout.default
        reply, _ = commit_wait(
            self.engine.app, store, self.engine.dispatch, workflow_id, step_id, run,
            SignalSpec(name=params.name or "", by="timer", timer=True),
            output=output, error=error, since=parked.get("since"),
        )  # fmt: skip
        if not reply.committed:
            self.timers.drop(workflow_id, step_id, run)
        elif reply.status == "compensating":
            self.engine.saga.fail_workflow(workflow_id, run)
