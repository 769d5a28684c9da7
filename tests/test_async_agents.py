"""Async agents: ``async def`` task functions, and ``baton worker --pool asyncio`` running
many of their steps at once in one process, with every guarantee of prefork.

The async test agent (``tests/agents.py``: ``aio.await_gate``) waits on a real Redis BLPOP
over an asyncio connection, so a test holds any number of steps in flight, sees them all
started, and releases them.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid

import redis

from agents import llm
from orchestration import WorkflowOrchestrator, WorkflowStatus
from orchestration.client.embedded import LocalWorkers
from orchestration.settings import BatonSettings
from tests.helpers import eventually, open_gate, wait_gate_started
from workers.aio import EventLoop

N = 60


def gate_step(name: str, **extra: object) -> dict[str, object]:
    return {"agent_id": "aio", "task_type": "await_gate", "parameters": {"name": name, **extra}}


def test_one_asyncio_worker_runs_many_async_steps_at_once(
    orchestrator: WorkflowOrchestrator, aio_worker: LocalWorkers, raw_redis: redis.Redis
) -> None:
    g = f"aio-{uuid.uuid4().hex[:6]}"
    wid = orchestrator.run_workflow(
        {"name": "many at once", "steps": [{"parallel": [gate_step(g)] * N, "output_key": "all"}]}
    )
    # All N are in flight together, in one process, before any is let through...
    wait_gate_started(raw_redis, g, count=N, timeout=60)
    started = [s.decode() for s in raw_redis.lrange(f"testlog:gate:{g}:started", 0, -1)]
    assert len({s.rsplit(":", 1)[1] for s in started}) == 1  # one worker process
    assert raw_redis.llen(f"testlog:gate:{g}:passed") == 0
    open_gate(raw_redis, g, N)
    ctx = orchestrator.wait(wid, timeout=60)

    # ...and each commits its own result, with the group's aggregate counting all of them.
    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["all"]["successful_tasks"] == N
    members = [r for r in ctx.task_results.values() if r.agent_id == "aio"]
    assert len(members) == N and all(r.result["opened"] for r in members)
    # Every coroutine ran on the process's one event loop.
    assert {r.result["thread"] for r in members} == {"baton-loop"}


def test_plain_functions_run_beside_async_ones_on_the_same_worker(
    orchestrator: WorkflowOrchestrator, aio_worker: LocalWorkers
) -> None:
    wid = orchestrator.run_workflow({"name": "plain", "steps": [
        {"agent_id": "aio", "task_type": "plain_echo", "parameters": {"value": 7},
         "output_key": "echo"}]})  # fmt: skip
    ctx = orchestrator.wait(wid, timeout=30)
    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["echo"]["value"] == 7
    assert ctx.shared_data["echo"]["thread"] != "baton-loop"  # a pool thread, not the loop


def test_a_step_timeout_cancels_its_coroutine_and_fails_the_step(
    orchestrator: WorkflowOrchestrator, aio_worker: LocalWorkers, raw_redis: redis.Redis
) -> None:
    g = f"aio-timeout-{uuid.uuid4().hex[:6]}"
    wid = orchestrator.run_workflow({"name": "too slow", "steps": [
        {**gate_step(g), "timeout": 1, "retries": 0}]})  # fmt: skip
    ctx = orchestrator.wait(wid, timeout=30)

    assert ctx.status == WorkflowStatus.FAILED
    assert "exceeded its timeout of 1" in (ctx.task_results["step_1"].error or "")
    # The coroutine saw the cancellation (it may catch it: it recorded it, then re-raised).
    assert raw_redis.lrange(f"testlog:gate:{g}:cancelled", 0, -1) == [b"step_1"]
    assert raw_redis.llen(f"testlog:gate:{g}:passed") == 0


def test_async_steps_log_with_their_workflow_context(
    orchestrator: WorkflowOrchestrator,
    aio_worker: LocalWorkers,
    raw_redis: redis.Redis,
    settings: BatonSettings,
) -> None:
    g = f"aio-log-{uuid.uuid4().hex[:6]}"
    wid = orchestrator.run_workflow({"name": "logs", "steps": [gate_step(g)]})
    wait_gate_started(raw_redis, g)
    open_gate(raw_redis, g)
    assert orchestrator.wait(wid, timeout=30).status == WorkflowStatus.COMPLETED
    lines = [
        line
        for log in (settings.home / "logs-aio").glob("*.log")
        for line in log.read_text().splitlines()
        if f"awaiting gate {g}" in line
    ]
    assert len(lines) == 1 and f"[{wid} step_1 aio]" in lines[0], lines


def test_a_green_pool_is_refused_for_async_agents(worker_env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "worker", "--agents", "aio", "--pool", "gevent"],
        env=worker_env | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "baton: --pool gevent cannot run async agents (aio.await_gate): its monkeypatching "
        "breaks asyncio; use --pool asyncio"
    ]


def test_async_steps_send_celery_task_events_for_flower(
    orchestrator: WorkflowOrchestrator, aio_worker: LocalWorkers, raw_redis: redis.Redis
) -> None:
    seen: list[dict[str, object]] = []
    subscribed = raw_redis.pubsub_numpat()
    with orchestrator.app.connection_for_read() as conn:
        receiver = orchestrator.app.events.Receiver(conn, handlers={"*": seen.append})
        listening = threading.Thread(
            target=lambda: receiver.capture(limit=None, timeout=None, wakeup=False), daemon=True
        )
        listening.start()
        # The receiver listens (its PSUBSCRIBE is in) before the step is sent.
        eventually(lambda: raw_redis.pubsub_numpat() > subscribed, what="the event receiver")
        g = f"aio-events-{uuid.uuid4().hex[:6]}"
        wid = orchestrator.run_workflow({"name": "events", "steps": [gate_step(g)]})
        wait_gate_started(raw_redis, g)
        open_gate(raw_redis, g)
        assert orchestrator.wait(wid, timeout=30).status == WorkflowStatus.COMPLETED
        eventually(
            lambda: any(e["type"] == "task-succeeded" for e in seen if e.get("hostname")),
            what="task-succeeded",
        )
        receiver.should_stop = True
    mine = [e for e in seen if str(e.get("type", "")).startswith("task-")]
    kinds = {e["type"] for e in mine}
    assert {"task-received", "task-started", "task-succeeded"} <= kinds
    assert any("aio" in str(e.get("hostname")) for e in mine if e["type"] == "task-started")


def test_a_worker_loop_that_stops_closes_what_closes_with_it() -> None:
    """A worker's event loop ends as ``asyncio.run``'s does (at warm shutdown): async
    generators are finalised, so ``llm.session()``'s HTTP session is closed, not left
    to the garbage collector ("Unclosed client session" in the log)."""
    loop = EventLoop()
    session = loop.run(llm.session())
    assert not session.closed
    loop.stop()
    assert session.closed
