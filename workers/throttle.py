"""A step under its agent's limits: it takes its rate turn and concurrency slot before its
call (``StepRun`` is one), or goes back in line holding nothing; a refused slot is waited
for in the worker, woken by its release (``Limiter.wakeups``); a missed turn takes the
attempt back. Map items take theirs one by one the same way (``workers/maps.py``)."""

from __future__ import annotations

import logging
import random
import time
from typing import NoReturn

from celery import Task
from greenlet import getcurrent
from pydantic import ValidationError

from agents.base import TaskType
from orchestration.definition.plan import PlannedTask
from orchestration.errors import LimitError, TurnMissed
from orchestration.state.limiter import Budget, Wake, check_turn
from orchestration.state.store import StateStore
from workers.aio import StepGreenlet
from workers.engine import Engine

log = logging.getLogger("baton.runner")
#: A throttled step's message waits (as a Celery ETA) at most this long; a turn further
#: off is asked for again then, holding nothing meanwhile.
THROTTLE_HORIZON = 30.0
#: A step refused a concurrency slot waits this long in its worker for one to be freed for
#: it (woken by the release, at once), then is put back in line, holding nothing...
SLOT_WAIT = 10.0
#: ...and meanwhile asks again this often unwoken (a dead worker's slot frees itself
#: when its lease lapses, and tells no one).
SLOT_RECHECK = 5.0


class Throttled:
    """What a step needs of its limits (its message, task and place in line, set by
    ``StepRun``)."""

    engine: Engine
    store: StateStore
    ctask: Task
    task: PlannedTask
    workflow_id: str
    step_id: str
    owner: str
    limit_owner: str
    refused: Exception | None
    turn_at: float | None

    def budgets(self, tt: TaskType) -> list[Budget]:
        """What the step draws on: each limit of its task type, under the key its
        parameters give (a key that fails is kept in ``refused``: the step fails with it)."""
        try:
            params = tt.validate_params(self.task.parameters)
            return [Budget(lim, lim.key_for(params)) for lim in tt.limits]
        except (LimitError, ValidationError) as exc:  # the step fails with it, when it runs
            self.refused = exc
            return []

    def admit(self) -> list[Budget]:
        """Take the step's turn under its agent's limits, or put it back to run when its
        turn comes (a Celery retry that is not one of the step's attempts: it holds no
        worker slot while it waits, and its wait shows in status as throttled). Refused a
        concurrency slot, it first waits up to ``SLOT_WAIT`` for one to be freed for it."""
        tt = self.engine.registry.get_task(self.task.agent_id, self.task.task_type)
        if not tt.limits or not (budgets := self.budgets(tt)):
            return []
        reserved = bool(self.ctask.request.kwargs.get("reserved"))
        until = time.monotonic() + SLOT_WAIT
        with self.engine.limiter.wakeups.expecting(self.limit_owner) as wake:
            while True:
                admission = self.engine.limiter.admit(
                    self.store.keys(self.workflow_id), self.step_id, self.limit_owner, budgets,
                    reserved=reserved, slot_ttl=self.engine.lease_seconds,
                    horizon=THROTTLE_HORIZON, retry=SLOT_RECHECK,
                )  # fmt: skip
                if admission.state == "admitted":
                    if admission.turn is not None:  # (monotonic from here on)
                        self.turn_at = time.monotonic() + admission.turn - time.time()
                    return budgets
                left = until - time.monotonic()
                if admission.why != "concurrency" or left <= 0:
                    break
                self._await_wake(wake, min(admission.wait, left))
        log.info(
            "step %s of %s throttled by %s (%s) for %.2fs",
            self.step_id, self.workflow_id, admission.limit, admission.why, admission.wait,
        )  # fmt: skip
        if admission.why == "concurrency":  # (it keeps its place in line: back at once)
            self._put_back(random.uniform(0.05, 0.25), reserved=False)
        self._put_back(admission.wait, reserved=admission.state == "reserved")

    def _await_wake(self, wake: Wake, timeout: float) -> None:
        """Until a release wakes it, or ``timeout``: on the event loop from a step's
        greenlet (the asyncio pool), else blocking this thread."""
        if isinstance(getcurrent(), StepGreenlet):
            self.engine.loop.run(wake.wait_async(timeout))
        else:
            wake.wait(timeout)

    def _put_back(self, countdown: float, *, reserved: bool) -> NoReturn:
        """Back in line under its limits (a Celery retry that is not one of its attempts);
        ``reserved``: it holds its rate turn."""
        raise self.ctask.retry(
            countdown=countdown,
            kwargs={**self.ctask.request.kwargs, "reserved": reserved},
            max_retries=None,
        )

    def wait_turn(self, on_time: bool = False) -> None:
        """A plain function's call starts at its rate turn (an async one's waits on the
        loop: ``EventLoop.run``'s ``start_at``); ``on_time``: or ``TurnMissed``."""
        if self.turn_at is None:
            return
        if (delay := self.turn_at - time.monotonic()) > 0:
            time.sleep(delay)
        if on_time:
            check_turn(self.turn_at, time.monotonic())

    def _back_in_line(self, missed: TurnMissed) -> NoReturn:
        """Its call could not start on its turn: the attempt is taken back, unstarted, and
        the step goes back in line for a new turn (not one of its attempts)."""
        log.info("step %s of %s missed its rate turn (%s)", self.step_id, self.workflow_id, missed)
        self.store.lease(self.workflow_id, self.step_id, self.owner, 0, release=True, uncount=True)
        self._put_back(0, reserved=False)

    def _renew_slots(self) -> None:
        tt = self.engine.registry.get_task(self.task.agent_id, self.task.task_type)
        if tt.limits and self.refused is None and (budgets := self.budgets(tt)):
            self.engine.limiter.renew(self.limit_owner, budgets, self.engine.lease_seconds)
