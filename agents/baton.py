"""The engine's own steps: ``baton.wait`` (what ``wait_for``, ``sleep`` and ``sleep_until``
steps become) and ``baton.workflow`` (a sub-workflow step). Registered like any task type
so that definitions, plans, groups and the saga treat them as steps; a worker never calls
the functions below: it parks the step, commits its signal (``workers/waits.py``) or
starts its child (``workers/subflows.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, model_validator

from agents.base import StepInput
from agents.registry import Agent
from orchestration.model.bounds import Duration, within_max_ahead
from orchestration.model.waits import (
    SUBFLOW_TASK,
    WAIT_AGENT,
    WAIT_TASK,
    SubflowParams,
    WaitParams,
    check_schema,
)

engine = Agent(WAIT_AGENT, description="The engine's own steps: waits for signals and timers")


class CheckedWaitParams(WaitParams):
    """A wait's parameters as a step or an agent gives them (a definition's ``wait_for``,
    ``sleep`` or ``sleep_until``, or a ``WaitFor`` or handoff at run time): every duration
    at most ``MAX_DURATION``, as a definition's are. (A stored plan is read back with
    ``WaitParams``, unbounded: one of an older version still runs.)"""

    timeout: Duration | None = None
    sleep: Duration | None = None
    sleep_until: Annotated[datetime, AfterValidator(within_max_ahead)] | None = None

    @model_validator(mode="after")
    def _valid(self) -> CheckedWaitParams:
        if self.name is None and self.sleep is None and self.sleep_until is None:
            raise ValueError("a wait needs a signal name, sleep or sleep_until")
        problem = check_schema(self.payload_schema)
        if problem:
            raise ValueError(f"schema is {problem}")
        return self


@engine.task(WAIT_TASK, params=CheckedWaitParams)
def wait(step: StepInput[CheckedWaitParams]) -> Any:
    """Waits for a signal or a time (the worker handles it; this is never called)."""
    raise RuntimeError("baton.wait is handled by the worker, not called")


@engine.task(SUBFLOW_TASK, params=SubflowParams)
def workflow(step: StepInput[SubflowParams]) -> Any:
    """Runs a child workflow and waits for it (the worker handles it; never called)."""
    raise RuntimeError("baton.workflow is handled by the worker, not called")
