"""Test-only agents, loaded by the test workers through ``BATON_AGENT_MODULES``.

Agents that need to coordinate with a test (a barrier to hold a step at a known point,
a ledger of side effects, a failure counter) use the test Redis named by
``BATON_TEST_REDIS``, under ``testlog:`` keys. Every task message published (client or
worker side) is recorded there too, so tests can measure what goes on the wire.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import redis
from celery.signals import after_task_publish, task_prerun
from pydantic import BaseModel, ConfigDict

from agents import Agent, Handoff, StepError, StepInput


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
    """Returns its value and which keys it could see (and records its execution)."""
    record_execution(step)
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


@testkit.task(params=ReadParams, reads=lambda p: [p.key])
def read(step: StepInput[ReadParams]) -> dict[str, Any]:
    """Reads a key and reports its size, proving the state arrived."""
    value = step.require(step.parameters.key)
    return {
        "key": step.parameters.key,
        "bytes": len(json.dumps(value)),
        "saw_keys": sorted(step.shared_data),
    }


_redis: redis.Redis | None = None


def test_redis() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["BATON_TEST_REDIS"], socket_timeout=None)
    return _redis


class GateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    wait: float = 60.0


def wait_at_gate(name: str, label: str, wait: float) -> bool:
    """A barrier: announce ``label:pid`` as started, then wait for the test to open it."""
    r = test_redis()
    r.rpush(f"testlog:gate:{name}:started", f"{label}:{os.getpid()}")
    opened = r.blpop([f"testlog:gate:{name}:open"], timeout=wait)
    r.rpush(f"testlog:gate:{name}:passed", label)
    return opened is not None


def record_execution(step: StepInput[Any]) -> None:
    """A side-effect ledger outside Redis (SQLite): every execution, committed or not."""
    path = os.environ.get("BATON_TEST_LEDGER")
    if not path:
        return
    import sqlite3

    with sqlite3.connect(path, timeout=30) as db:
        db.execute("CREATE TABLE IF NOT EXISTS runs (workflow TEXT, step TEXT, pid INTEGER)")
        db.execute(
            "INSERT INTO runs VALUES (?, ?, ?)", (step.workflow_id, step.step_id, os.getpid())
        )


@testkit.task(params=GateParams)
def gate(step: StepInput[GateParams]) -> dict[str, Any]:
    """Records its execution in the ledger, then waits until the test opens the gate."""
    record_execution(step)
    opened = wait_at_gate(step.parameters.name, step.step_id, step.parameters.wait)
    return {"gate": step.parameters.name, "opened": opened}


class FlakyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    failures: int = 1
    permanent: bool = False  # fail with an error that says retrying cannot help


@testkit.task(params=FlakyParams)
def flaky(step: StepInput[FlakyParams]) -> dict[str, Any]:
    """Fails its first ``failures`` attempts (counted in Redis), then succeeds."""
    n = int(test_redis().incr(f"testlog:flaky:{step.workflow_id}:{step.step_id}"))
    if n <= step.parameters.failures:
        if step.parameters.permanent:
            raise StepError(f"record {n} is malformed", retryable=False)
        raise ConnectionError(f"upstream unavailable (attempt {n})")
    return {"attempts": n}


class Strict(BaseModel):
    total: int


class BadOutputParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    total: Any = "not a number"


@testkit.task(params=BadOutputParams, output=Strict)
def bad_output(step: StepInput[BadOutputParams]) -> dict[str, Any]:
    """Returns output that its own output model refuses (unless given a valid total)."""
    return {"total": step.parameters.total}


class LedgerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: str


@testkit.task(params=LedgerParams, compensation="release")
def reserve(step: StepInput[LedgerParams]) -> dict[str, Any]:
    """A side effect outside the workflow state: a ledger line, undone by ``release``."""
    test_redis().rpush(f"testlog:ledger:{step.workflow_id}", f"reserve:{step.parameters.item}")
    return {"reserved": step.parameters.item}


@testkit.task(params=LedgerParams)
def release(step: StepInput[LedgerParams]) -> dict[str, Any]:
    """Compensation of ``reserve``: it is handed the result it undoes."""
    [original] = step.previous_results
    if step.parameters.item.startswith("stuck"):
        raise RuntimeError(f"{step.parameters.item} cannot be released")
    if original.result["reserved"] != step.parameters.item:
        raise ValueError(f"asked to release {step.parameters.item}, got {original.result}")
    test_redis().rpush(f"testlog:ledger:{step.workflow_id}", f"release:{step.parameters.item}")
    return {"released": step.parameters.item}


class HandParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_agent: str = "testkit"
    to_task: str = "echo"
    to_parameters: dict[str, Any] = {}
    to_output_key: str | None = None
    hops: int = 0  # > 0: hand off to ``hand`` again, this many more times


@testkit.task(params=HandParams)
def hand(step: StepInput[HandParams]) -> Handoff:
    """Passes the work on at run time, possibly to itself (a loop when hops is large)."""
    p = step.parameters
    if p.hops > 0:
        again = {**p.model_dump(), "hops": p.hops - 1}
        return Handoff(
            agent_id="testkit", task_type="hand", parameters=again, output={"hop": p.hops}
        )
    return Handoff(
        agent_id=p.to_agent,
        task_type=p.to_task,
        parameters=p.to_parameters,
        output_key=p.to_output_key,
        output={"handed_to": f"{p.to_agent}.{p.to_task}"},
    )


@after_task_publish.connect
def _record_message_size(
    body: Any = None, headers: Any = None, routing_key: str = "", **_: Any
) -> None:
    if "BATON_TEST_REDIS" not in os.environ or not isinstance(body, (list, tuple)) or not body:
        return
    args = body[0]
    if not args or len(args) < 2:
        return
    size = len(json.dumps(body)) + len(json.dumps(headers or {}, default=str))
    task = (headers or {}).get("task", "?")
    pipe = test_redis().pipeline()
    pipe.rpush(
        f"testlog:msgsize:{args[0]}", json.dumps({"task": task, "step": args[1], "bytes": size})
    )
    # The whole message, so a test can deliver a faithful duplicate of it.
    message = {"body": body, "headers": headers, "routing_key": routing_key}
    pipe.set(f"testlog:msg:{args[0]}:{args[1]}", json.dumps(message, default=str))
    pipe.rpush(f"testlog:ids:{args[0]}", f"{task} {args[1]} {(headers or {}).get('id')}")
    pipe.execute()


class RemoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    ms: int = 100


slowapi = Agent("slowapi", description="Waits on a slow remote call, as an LLM agent would")


@slowapi.task(params=RemoteParams)
def remote_call(step: StepInput[RemoteParams]) -> dict[str, Any]:
    """Calls a slow HTTP endpoint; the time goes waiting on the network, not on CPU."""
    import urllib.request

    with urllib.request.urlopen(f"{step.parameters.url}?ms={step.parameters.ms}", timeout=30) as r:
        return {"answer": json.loads(r.read()), "pid": os.getpid()}


solo = Agent("solo", description="Consumed only by workers a test starts for itself")


@solo.task(params=EchoParams)
def note(step: StepInput[EchoParams]) -> dict[str, Any]:
    """Logs a line, for the tests of worker logs."""
    logging.getLogger("baton.agents.solo").warning("noting %s", step.parameters.value)
    return {"noted": step.parameters.value}


@task_prerun.connect
def _hold_aggregates(task: Any = None, args: Any = None, **_: Any) -> None:
    """With BATON_TEST_AGGREGATE_GATE set, a worker holds chord callbacks at that gate."""
    name = os.environ.get("BATON_TEST_AGGREGATE_GATE")
    if name and getattr(task, "name", "") == "baton.aggregate":
        wait_at_gate(name, str(args[1]), 120)


ghost = Agent("ghost", description="No worker ever consumes its queue (agent.ghost)")


@ghost.task(params=EchoParams)
def haunt(step: StepInput[EchoParams]) -> dict[str, Any]:
    """Never runs: it shows what a workflow waiting on an unserved queue looks like."""
    return {"value": step.parameters.value}


# --------------------------------------------------------------------------- async agents

aio = Agent("aio", description="Async test agent: waits on Redis without holding a thread")


class AsyncGateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    wait: float = 60.0
    emits: int = 0


@aio.task(params=AsyncGateParams)
async def await_gate(step: StepInput[AsyncGateParams]) -> dict[str, Any]:
    """``gate``, awaited: announces itself, waits for the test to open the gate (a BLPOP on
    an asyncio connection), records a cancellation if its timeout cancels it."""
    import asyncio
    import threading

    import redis.asyncio as aredis

    p = step.parameters
    record_execution(step)
    r = aredis.Redis.from_url(os.environ["BATON_TEST_REDIS"])
    try:
        await r.rpush(f"testlog:gate:{p.name}:started", f"{step.step_id}:{os.getpid()}")
        logging.getLogger("tests.aio").info("awaiting gate %s", p.name)
        for i in range(p.emits):
            step.emit({"token": f"t{i}"})
            step.progress(i + 1, p.emits, f"token {i + 1}")
        try:
            opened = await r.blpop([f"testlog:gate:{p.name}:open"], timeout=p.wait)
        except asyncio.CancelledError:
            await r.rpush(f"testlog:gate:{p.name}:cancelled", step.step_id)
            raise
        await r.rpush(f"testlog:gate:{p.name}:passed", step.step_id)
        return {
            "gate": p.name,
            "opened": opened is not None,
            "pid": os.getpid(),
            "thread": threading.current_thread().name,
        }
    finally:
        await r.aclose()


@aio.task(params=EchoParams)
def plain_echo(step: StepInput[EchoParams]) -> dict[str, Any]:
    """A plain function on the async agent's worker: it runs on the pool's threads."""
    import threading

    return {"value": step.parameters.value, "thread": threading.current_thread().name}


class EmitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = 3
    size: int = 10  # characters per emitted string
    catch: bool = False  # catch EmitTooLarge and carry on


@testkit.task(params=EmitParams)
def emit_many(step: StepInput[EmitParams]) -> dict[str, Any]:
    """Emits ``count`` strings of ``size`` characters, with progress after each."""
    from agents import EmitTooLarge

    p = step.parameters
    refused = 0
    for i in range(p.count):
        try:
            step.emit(f"{i}:".ljust(p.size, "x"))
        except EmitTooLarge:
            if not p.catch:
                raise
            refused += 1
        step.progress(i + 1, p.count)
    return {"emitted": p.count - refused, "refused": refused}


# --------------------------------------------------------------------------- limits

throttle = Agent(
    "throttle", description="Limited test agent: 3 steps at once everywhere", concurrency_limit=3
)


@throttle.task(params=AsyncGateParams)
async def hold(step: StepInput[AsyncGateParams]) -> dict[str, Any]:
    """``aio.await_gate`` under the agent's concurrency limit."""
    return await await_gate(step)


class TickParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str


@throttle.task(params=TickParams, rate_limit="10/s", limit_key=lambda p: p.tenant)
async def tick(step: StepInput[TickParams]) -> dict[str, Any]:
    """Records when it ran, per tenant: each tenant has its own 10/s."""
    import time

    import redis.asyncio as aredis

    r = aredis.Redis.from_url(os.environ["BATON_TEST_REDIS"])
    try:
        now = time.time()
        await r.rpush(f"testlog:tick:{step.workflow_id}:{step.parameters.tenant}", repr(now))
        return {"at": now}
    finally:
        await r.aclose()


@testkit.task(params=EchoParams)
def ask(step: StepInput[EchoParams]) -> Any:
    """Decides at run time to wait for a reviewer's correction of its draft."""
    from agents import WaitFor

    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    return WaitFor(
        "correction",
        schema=schema,
        output_key="correction",
        output={"draft": step.parameters.value},
    )


class SquareParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str = ""  # items record their runs under testlog:map:<tag>:... when set


@testkit.task(params=SquareParams)
def square(step: StepInput[SquareParams]) -> dict[str, Any]:
    """A map's item ``{"value": n}``: its square, and the index it came with. An item with
    ``"fail": true`` raises; with ``"until": <key>`` it raises while that test key exists.
    With a ``tag``, each run is counted per index and the most items at once is kept."""
    item, tag = step.item, step.parameters.tag
    r = test_redis() if tag else None
    if r is not None:
        r.hincrby(f"testlog:map:{tag}:runs", str(step.index), 1)
        now = r.incr(f"testlog:map:{tag}:now")
        r.eval(  # the most items ever running at once
            "if tonumber(redis.call('GET', KEYS[1]) or 0) < tonumber(ARGV[1]) then "
            "redis.call('SET', KEYS[1], ARGV[1]) end", 1, f"testlog:map:{tag}:max", now,
        )  # fmt: skip
    try:
        if item.get("hold"):  # held at the gate named by the tag (pause and kill tests)
            wait_at_gate(tag, str(step.index), float(item["hold"]))
        if item.get("fail") or (item.get("until") and test_redis().exists(item["until"])):
            raise ValueError(f"item {step.index} refused")
        return {"index": step.index, "square": item["value"] ** 2}
    finally:
        if r is not None:
            r.decr(f"testlog:map:{tag}:now")


class AskWithinParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout: float


@testkit.task(params=AskWithinParams)
def ask_within(step: StepInput[AskWithinParams]) -> Any:
    """Decides at run time to wait for a signal ``review`` for at most ``timeout`` s."""
    from agents import WaitFor

    return WaitFor("review", timeout=step.parameters.timeout, output={"asked": True})
