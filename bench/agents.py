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
import ssl
import time
import weakref
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

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

#: Requests one httpx client carries at a time; more in flight open another client (as
#: ``agents/llm.py`` does, with 64). httpcore's pool does work quadratic in its connections
#: on every request (encode/httpx#3215), and each client builds an SSL context (~30 ms)
#: unless given one. CPU of the client for 1,000 concurrent calls, measured on the
#: benchmark machine: one client with 1,000 connections 21-26 s; 64 per client 5-7 s;
#: 4 per client with one shared SSL context 1.7-1.8 s.
PER_CLIENT = 4
LIMIT_RATE = "20/s"  # chat_limited's limit (per API key), and what bare.chat_limited gets
_TIMEOUT = httpx.Timeout(120.0, connect=10.0, pool=None)
_LIMITS = httpx.Limits(max_connections=PER_CLIENT, max_keepalive_connections=PER_CLIENT)
_SSL = ssl.create_default_context()  # one for every client (https URLs only use it)


class _Clients:
    """An event loop's HTTP clients, reused by every step that runs on it."""

    def __init__(self) -> None:
        self.busy: dict[httpx.AsyncClient, int] = {}  # requests in flight on each

    def take(self) -> httpx.AsyncClient:
        http = min(self.busy, key=self.busy.__getitem__, default=None)
        if http is None or self.busy[http] >= PER_CLIENT:
            http = httpx.AsyncClient(verify=_SSL, timeout=_TIMEOUT, limits=_LIMITS)
            self.busy[http] = 0
        self.busy[http] += 1
        return http

    def give(self, http: httpx.AsyncClient) -> None:
        self.busy[http] -= 1


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Clients] = weakref.WeakKeyDictionary()


async def chat_call(url: str, key: str, prompt: str) -> dict[str, Any]:
    """POST one chat completion to ``url`` (an OpenAI-compatible base URL, ".../v1") on
    the running loop's clients: the HTTP status, the answer's length and when the request
    was sent (epoch s). A refusal (429) is returned, not raised: the API server counts
    them, and no retry blurs the count."""
    loop = asyncio.get_running_loop()
    clients = _loops.get(loop)
    if clients is None:
        clients = _loops[loop] = _Clients()
    http = clients.take()
    sent = time.time()
    try:
        resp = await http.post(
            f"{url}/chat/completions",
            json={"model": "bench", "messages": [{"role": "user", "content": prompt}]},
            headers={"Authorization": f"Bearer {key}"},
        )
    finally:
        clients.give(http)
    if resp.status_code != 200:
        return {"status": resp.status_code, "chars": 0, "sent": sent}
    answer = resp.json()["choices"][0]["message"]["content"]
    return {"status": 200, "chars": len(answer), "sent": sent}


async def close_clients() -> None:
    """Close the running loop's clients (a loop that is about to end: ``asyncio.run``)."""
    clients = _loops.pop(asyncio.get_running_loop(), None)
    for http in clients.busy if clients else ():
        await http.aclose()


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
