"""Waits: steps that hold the workflow until a person (a signal) or the clock says so.

A ``wait_for`` step waits for a signal of its name, whose payload must fit its JSON
Schema; a ``sleep``/``sleep_until`` step waits for a time. Both are planned as steps of
the engine itself (``baton.wait``, on the control queue), so chains, groups, commits and
the saga treat them as any step. When a worker reaches one it either finds its signal
already kept (it came early) and commits it, or parks it: the workflow then holds no
message, no worker and no lease, only its record in Redis, until ``signal`` (or the
timer sweep) commits the output and sends the workflow on in one script.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict

from orchestration.errors import SignalError
from orchestration.model.bounds import FAR_FUTURE

WAIT_AGENT, WAIT_TASK = "baton", "wait"
SUBFLOW_TASK = "workflow"  # a sub-workflow step: it waits for its child to end


class SubflowParams(BaseModel):
    """What a planned sub-workflow step carries: the child's definition (checked with the
    parent's), where its inputs come from, where its outputs go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow: dict[str, Any]
    inputs: dict[str, str] = {}  # child's shared_data key -> parent's path
    outputs: dict[str, str] = {}  # parent's shared_data key -> child's key


def child_id(workflow_id: str, step_id: str) -> str:
    """A sub-workflow's id: its parent's and the step's, so that it is found again (a
    retried parent goes on with the child it has)."""
    return f"{workflow_id}.{step_id}"


class OnTimeoutDefault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    default: Any


OnTimeout = Literal["fail", "continue"] | OnTimeoutDefault


class WaitParams(BaseModel):
    """What a planned wait step carries (its ``parameters``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None  # the signal it waits for; None: a sleep
    payload_schema: dict[str, Any] = {}
    timeout: float | None = None  # seconds from when it is reached
    on_timeout: OnTimeout = "fail"
    sleep: float | None = None
    sleep_until: datetime | None = None

    def due(self, reached: float) -> float | None:
        """When its timer fires (epoch seconds), given when the wait was reached; at the
        latest ``FAR_FUTURE`` (a plan stored by an older version may give any duration)."""
        if self.sleep is not None:
            due = reached + self.sleep
        elif self.sleep_until is not None:
            due = self.sleep_until.astimezone(UTC).timestamp()
        elif self.timeout is not None:
            due = reached + self.timeout
        else:
            return None
        return min(due, FAR_FUTURE.timestamp())


def check_schema(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema, or None."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}"
    return None


def check_payload(name: str, schema: dict[str, Any], payload: Any) -> None:
    """Refuse a payload that does not fit the wait's schema, naming the field."""
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
    if error is not None:
        path = [str(p) for p in error.absolute_path]
        if error.validator == "required":  # name the missing field, not its parent
            missing = next((k for k in error.validator_value if k not in error.instance), None)
            path.append(str(missing))
        field = "/".join(path) or "(the payload)"
        raise SignalError(f"signal {name!r} refused: {field}: {error.message}")
