"""The Baton-side no-op agent, loaded by workers through ``BATON_AGENT_MODULES=bench.agents``.

``noop`` does nothing, so a step's time is the engine's time; ``payload`` reads the
previous step's output and writes ``size`` bytes, to measure the handoff of state.
"""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import BaseModel, ConfigDict

import bench.msglog  # noqa: F401  (message-size log, same in every process)
from agents import Agent, StepInput
from bench import profiling


class NoopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str = ""


class PayloadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 100 * 1024
    read: str | None = None


bench = Agent("bench", description="No-op and payload tasks for the benchmark")


def _payload_reads(params: PayloadParams) -> list[str]:
    return [params.read] if params.read else []


# Declare what ``payload`` reads where the engine supports it (``reads=``), so an engine
# that loads only declared keys is measured doing so.
_PAYLOAD_OPTS: dict[str, Any] = (
    {"reads": _payload_reads} if "reads" in inspect.signature(Agent.task).parameters else {}
)


@bench.task(params=NoopParams)
def noop(step: StepInput[NoopParams]) -> dict[str, Any]:
    """Returns a tiny dict: the step costs only what the engine costs."""
    return {"ok": True}


@bench.task(params=PayloadParams, **_PAYLOAD_OPTS)
def payload(step: StepInput[PayloadParams]) -> dict[str, Any]:
    """Reads the previous output (if named) and returns ``size`` bytes of new state."""
    seen = 0
    if step.parameters.read:
        seen = len(step.require(step.parameters.read)["blob"])
    return {"blob": "x" * step.parameters.size, "read": seen}


profiling.install_if_requested()


class RemoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    ms: int = 100


remote = Agent("bench_remote", description="Waits on a slow remote call, as an LLM agent would")


@remote.task(params=RemoteParams)
def remote_call(step: StepInput[RemoteParams]) -> dict[str, Any]:
    """Calls a slow HTTP endpoint: the time goes waiting on the network, not on CPU."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{step.parameters.url}?ms={step.parameters.ms}", timeout=60) as r:
        return {"answer": json.loads(r.read())}
