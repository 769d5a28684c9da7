"""Rate and concurrency limits that hold across every worker process: declared on the
agent or task type, enforced atomically in Redis, changed at run time; a step over its
limit waits without holding a worker slot and without using up an attempt."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from agents import Agent, LimitError
from orchestration import WorkflowOrchestrator, WorkflowStatus
from orchestration.client.embedded import LocalWorkers
from tests.helpers import eventually, open_gate, wait_gate_started
from workers.dashboard.views import DashboardReader


@pytest.fixture(scope="module")
def two_limited_workers(
    orchestrator: WorkflowOrchestrator,
    asyncio_workers: Callable[[list[list[str]], int, str], LocalWorkers],
) -> Iterator[LocalWorkers]:
    """Two asyncio worker processes for the limited agent, 50 wide each: far wider than
    its limits, so only the limits can hold steps back."""
    pool = asyncio_workers([["throttle"], ["throttle"]], 50, "logs-throttle")
    yield pool
    orchestrator.reset_limit("throttle")
    pool.stop()


def baton(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_concurrency_limit_holds_across_worker_processes(
    orchestrator: WorkflowOrchestrator, two_limited_workers: LocalWorkers, raw_redis: redis.Redis
) -> None:
    g = f"conc-{uuid.uuid4().hex[:6]}"
    member = {"agent_id": "throttle", "task_type": "hold", "parameters": {"name": g}}
    wid = orchestrator.run_workflow(
        {"name": "8 under 3", "steps": [{"parallel": [member] * 8, "output_key": "held"}]}
    )
    wait_gate_started(raw_redis, g, count=3)
    # The other five wait their turn: throttled in the status, none started.
    report = eventually(
        lambda: (
            (r := orchestrator.get_workflow_status(wid)).throttled_steps
            and len(r.throttled_steps) == 5
            and r
        ),
        what="five throttled steps",
    )
    assert {t.why for t in report.throttled_steps} == {"concurrency"}
    assert {t.limit for t in report.throttled_steps} == {"throttle"}
    time.sleep(1.0)  # (they keep asking: still nobody gets past the limit)
    assert raw_redis.llen(f"testlog:gate:{g}:started") == 3
    [use] = [u for u in orchestrator.limits() if u.name == "throttle"]
    assert (use.concurrency, use.running, use.waiting) == (3, 3, 5)
    assert {w.rsplit(":", 2)[0] for w in use.waiters} == {wid} and len(use.waiters) == 5
    # The dashboard shows them as throttled, saying by what.
    doc = DashboardReader(orchestrator.store).workflow(wid)
    shown = [s for b in doc["nodes"][0]["branches"] for s in b if s["status"] == "throttled"]
    assert len(shown) == 5 and {s["throttled"]["limit"] for s in shown} == {"throttle"}

    for released in (3, 6):
        open_gate(raw_redis, g, 3)
        wait_gate_started(raw_redis, g, count=min(8, released + 3))
    open_gate(raw_redis, g, 2)
    ctx = orchestrator.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["held"]["successful_tasks"] == 8
    # Both processes took a share, and waiting used up no attempt.
    pids = {
        s.decode().rsplit(":", 1)[1] for s in raw_redis.lrange(f"testlog:gate:{g}:started", 0, -1)
    }
    assert len(pids) == 2
    assert {
        r.metadata["attempt"] for r in ctx.task_results.values() if r.agent_id == "throttle"
    } == {1}
    assert not [h for h in ctx.execution_history if h.event == "step_retry"]


def test_a_rate_limit_per_key_spaces_each_keys_steps_and_no_other(
    orchestrator: WorkflowOrchestrator, two_limited_workers: LocalWorkers, raw_redis: redis.Redis
) -> None:
    orchestrator.set_limit("throttle", concurrency=0)  # (only the rate here)
    try:
        ticks = [{"agent_id": "throttle", "task_type": "tick", "parameters": {"tenant": t}}
                 for t in ["a"] * 30 + ["b"] * 5]  # fmt: skip
        wid = orchestrator.run_workflow(
            {"name": "30 + 5 at 10/s each", "steps": [{"parallel": ticks, "output_key": "t"}]}
        )
        ctx = orchestrator.wait(wid, timeout=60)
    finally:
        orchestrator.reset_limit("throttle")
    assert ctx.status == WorkflowStatus.COMPLETED

    def starts(tenant: str) -> list[float]:
        return sorted(map(float, raw_redis.lrange(f"testlog:tick:{wid}:{tenant}", 0, -1)))

    a, b = starts("a"), starts("b")
    assert (len(a), len(b)) == (30, 5)
    # Tenant a: never more than 10 (+1 at the window's edge) in any second, so its 30
    # take about three seconds...
    assert max(sum(1 for t in a if s <= t < s + 1) for s in a) <= 11
    assert a[-1] - a[0] >= 2.5
    # ...and tenant b, with a budget of its own, is not queued behind them.
    assert b[-1] < a[-1] - 1.5
    assert {
        r.metadata["attempt"] for r in ctx.task_results.values() if r.agent_id == "throttle"
    } == {1}
    keys = {u.key for u in orchestrator.limits() if u.name == "throttle.tick"}
    assert {"a", "b"} <= keys


def test_limits_change_at_run_time_from_the_cli(
    orchestrator: WorkflowOrchestrator, two_limited_workers: LocalWorkers,
    worker_env: dict[str, str],
) -> None:  # fmt: skip
    out = baton(worker_env, "limits", "set", "throttle", "--concurrency", "5")
    assert (out.returncode, out.stdout, out.stderr) == (
        0,
        "throttle: rate none, concurrency 5\n",
        "",
    )
    [use] = [u for u in orchestrator.limits() if u.name == "throttle"]
    assert (use.concurrency, use.overridden) == (5, True)
    table = baton(worker_env, "limits")
    assert table.returncode == 0 and "throttle *" in table.stdout and "10/s" in table.stdout

    bad = baton(worker_env, "limits", "set", "nope", "--rate", "1/s")
    assert bad.returncode == 2
    assert bad.stderr.startswith("baton: no limit named 'nope' (limits: ")
    assert "throttle, throttle.tick" in bad.stderr and len(bad.stderr.splitlines()) == 1
    worse = baton(worker_env, "limits", "set", "throttle", "--rate", "5/d")
    assert worse.returncode == 2 and "'5/d' is not a rate" in worse.stderr

    reset = baton(worker_env, "limits", "reset", "throttle")
    assert reset.stdout == "throttle: back to its declared values\n"
    [use] = [u for u in orchestrator.limits() if u.name == "throttle"]
    assert (use.concurrency, use.overridden) == (3, False)


def test_a_limit_key_that_gives_no_key_fails_its_step_naming_it(
    orchestrator: WorkflowOrchestrator, two_limited_workers: LocalWorkers
) -> None:
    wid = orchestrator.run_workflow({"name": "no tenant", "steps": [
        {"agent_id": "throttle", "task_type": "tick", "parameters": {"tenant": ""}}]})  # fmt: skip
    ctx = orchestrator.wait(wid, timeout=30)
    assert ctx.status == WorkflowStatus.FAILED
    assert "limit_key of throttle.tick gave ''" in (ctx.task_results["step_1"].error or "")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_limit": "60"}, "rate_limit of bad '60' is not a rate"),
        ({"rate_limit": "-1/s"}, "rate_limit of bad '-1/s' is not a rate"),
        ({"concurrency_limit": 0}, "concurrency_limit of bad 0 is not a whole number"),
        ({"concurrency_limit": 2.5}, "concurrency_limit of bad 2.5 is not a whole number"),
    ],
)
def test_a_bad_limit_is_refused_when_the_agent_registers(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(LimitError, match=message.replace("(", r"\(")):
        Agent("bad", register=False, **kwargs)  # type: ignore[arg-type]


def test_a_bad_task_limit_or_key_is_refused_naming_the_task() -> None:
    agent = Agent("bad2", register=False)
    with pytest.raises(LimitError, match="rate_limit of bad2.t '10/d'"):
        agent.task("t", rate_limit="10/d")(lambda step: None)
    with pytest.raises(LimitError, match="limit_key of bad2.u must be a function"):
        agent.task("u", rate_limit="1/s", limit_key="api_key")(lambda step: None)  # type: ignore[arg-type]
    with pytest.raises(LimitError, match="limit_key of bad2.v is given without"):
        agent.task("v", limit_key=lambda p: "k")(lambda step: None)
