"""Test-only agents, loaded by the test workers through ``BATON_AGENT_MODULES``.

Also records the size of every task message published (client or worker side) in a
Redis list per workflow, so tests can measure what really goes on the wire.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from celery.signals import before_task_publish
from pydantic import BaseModel, ConfigDict

from agents.base import Agent, StepInput


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Any = None


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = "boom"


class PayloadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 1024


class ReadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str


testkit = Agent("testkit", description="Agents for the test suite")


@testkit.task(params=EchoParams)
def echo(step: StepInput[EchoParams]) -> dict[str, Any]:
    """Returns its value and which keys it could see."""
    return {
        "value": step.parameters.value,
        "saw_keys": sorted(step.shared_data),
        "previous": [r.step_id for r in step.previous_results],
    }


@testkit.task(params=FailParams)
def fail(step: StepInput[FailParams]) -> None:
    """Always raises, as a broken agent would."""
    raise ValueError(step.parameters.message)


@testkit.task(params=PayloadParams)
def payload(step: StepInput[PayloadParams]) -> dict[str, Any]:
    """Produces ``size`` bytes of shared data."""
    return {"blob": "x" * step.parameters.size}


@testkit.task(params=ReadParams)
def read(step: StepInput[ReadParams]) -> dict[str, Any]:
    """Reads a key and reports its size, proving the state arrived."""
    value = step.require(step.parameters.key)
    return {"key": step.parameters.key, "bytes": len(json.dumps(value))}


_sizes: redis.Redis | None = None


@before_task_publish.connect
def _record_message_size(body: Any = None, headers: Any = None, **_: Any) -> None:
    url = os.environ.get("BATON_TEST_MESSAGE_LOG")
    if not url or not isinstance(body, (list, tuple)) or not body or not body[0]:
        return
    global _sizes
    if _sizes is None:
        _sizes = redis.Redis.from_url(url)
    args = body[0]
    size = len(json.dumps(body)) + len(json.dumps(headers or {}, default=str))
    task = (headers or {}).get("task", "?")
    _sizes.rpush(
        f"testlog:msgsize:{args[0]}", json.dumps({"task": task, "step": args[1], "bytes": size})
    )
