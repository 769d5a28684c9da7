"""The Baton-side no-op agent, loaded by workers through ``BATON_AGENT_MODULES=bench.agents``.

``noop`` does nothing, so a step's time is the engine's time; ``payload`` reads the
previous step's output and writes ``size`` bytes, to measure the handoff of state.
``bench_io`` (``bench/io.py``'s scenarios) is async: ``chat`` awaits one chat completion
from the loopback API, ``chat_limited`` does the same under a 20/s limit per API key, and
``emit_timed`` streams timestamped values.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import bench.msglog  # noqa: F401  (message-size log, same in every process)
from agents import Agent, StepInput, llm
from bench import profiling


class NoopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str = ""


class PayloadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 100 * 1024
    read: str | None = None


bench_agent = Agent("bench", description="No-op and payload tasks for the benchmark")


def _payload_reads(params: PayloadParams) -> list[str]:
    return [params.read] if params.read else []


# Declare what ``payload`` reads where the engine supports it (``reads=``), so an engine
# that loads only declared keys is measured doing so.
_PAYLOAD_OPTS: dict[str, Any] = (
    {"reads": _payload_reads} if "reads" in inspect.signature(Agent.task).parameters else {}
)


@bench_agent.task(params=NoopParams)
def noop(step: StepInput[NoopParams]) -> dict[str, Any]:
    """Returns a tiny dict: the step costs only what the engine costs."""
    return {"ok": True}


@bench_agent.task(params=PayloadParams, **_PAYLOAD_OPTS)
def payload(step: StepInput[PayloadParams]) -> dict[str, Any]:
    """Reads the previous output (if named) and returns ``size`` bytes of new state."""
    seen = 0
    if step.parameters.read:
        seen = len(step.require(step.parameters.read)["blob"])
    return {"blob": "x" * step.parameters.size, "read": seen}


class ItemsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(default=10, ge=0)


@bench_agent.task(params=ItemsParams)
def items(step: StepInput[ItemsParams]) -> dict[str, Any]:
    """A list of ``n`` items for a map to run over (``bench/maps.py``): 0 .. n-1."""
    return {"items": list(range(step.parameters.n))}


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


# --- bench/io.py: agents that wait on the outside world -------------------------------

LIMIT_RATE = "20/s"  # chat_limited's limit (per API key), and what bare.chat_limited gets


async def chat_call(url: str, key: str, prompt: str) -> dict[str, Any]:
    """POST one chat completion to ``url`` (an OpenAI-compatible base URL, ".../v1") on
    the running loop's session (``agents.llm.session``: one aiohttp session per loop,
    about 0.6 ms of CPU a call at 1,000 in flight, closed with the loop): the HTTP status,
    the answer's length and when the request was sent (epoch s). A refusal (429) is
    returned, not raised: the API server counts them, and no retry blurs the count."""
    sent = time.time()
    async with (await llm.session()).post(
        f"{url}/chat/completions",
        json={"model": "bench", "messages": [{"role": "user", "content": prompt}]},
        headers={"Authorization": f"Bearer {key}"},
    ) as resp:
        if resp.status != 200:
            return {"status": resp.status, "chars": 0, "sent": sent}
        answer = (await resp.json())["choices"][0]["message"]["content"]
    return {"status": 200, "chars": len(answer), "sent": sent}


class ChatParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    key: str = "sk-bench"
    prompt: str = "Summarise: 3 apples, 5 pears and 7 plums."


class EmitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(default=200, ge=1)
    gap_ms: float = Field(default=5.0, ge=0)
    lead_ms: float = Field(default=200.0, ge=0)  # before the first emit: the reader is ready


bench_io = Agent("bench_io", description="Async steps that wait on a chat API, or stream")


@bench_io.task(params=ChatParams)
async def chat(step: StepInput[ChatParams]) -> dict[str, Any]:
    """One chat completion, awaited on the worker's event loop."""
    p = step.parameters
    return await chat_call(p.url, p.key, p.prompt)


@bench_io.task(params=ChatParams, rate_limit=LIMIT_RATE, limit_key=lambda p: p.key)
async def chat_limited(step: StepInput[ChatParams]) -> dict[str, Any]:
    """``chat`` under a limit per API key that holds across every worker process."""
    p = step.parameters
    return await chat_call(p.url, p.key, p.prompt)


@bench_io.task(params=EmitParams)
async def emit_timed(step: StepInput[EmitParams]) -> dict[str, Any]:
    """Emits ``count`` small values ``gap_ms`` apart, each with the time it was emitted."""
    p = step.parameters
    await asyncio.sleep(p.lead_ms / 1000)
    for i in range(p.count):
        step.emit({"i": i, "t": time.time()})
        await asyncio.sleep(p.gap_ms / 1000)
    return {"emitted": p.count}
