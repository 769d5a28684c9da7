"""The engine's own step, ``baton.wait``: what ``wait_for``, ``sleep`` and ``sleep_until``
steps become. Registered like any task type so that definitions, plans, groups and the
saga treat a wait as a step; a worker never calls the function below: it parks the step
or commits its signal (``workers/waits.py``)."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from agents.base import StepInput
from agents.registry import Agent
from orchestration.waits import WAIT_AGENT, WAIT_TASK, WaitParams, check_schema

engine = Agent(WAIT_AGENT, description="The engine's own steps: waits for signals and timers")


class CheckedWaitParams(WaitParams):
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
