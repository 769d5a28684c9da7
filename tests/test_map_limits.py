"""Limits inside maps: each item of a map is a step for its task's rate and concurrency
limits, whatever the batch size; and a map's start taken by a worker that has not loaded
its agent is handed on to one that has, or fails saying so, never left to stall.

Timing figures (calls per window, run time against the ideal, a freed slot taken at once)
are measured by ``bench/map_limits.py``; these tests assert on what was recorded."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from orchestration import WorkflowOrchestrator, WorkflowStatus
from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.model.names import CONTROL_QUEUE, agent_queue
from orchestration.settings import BatonSettings
from tests.conftest import NO_CONTROL
from tests.helpers import eventually, open_gate, step, wait_gate_started


@pytest.fixture(scope="module")
def limited_worker(
    orchestrator: WorkflowOrchestrator,
    workers: LocalWorkers,  # (the session's: they run the maps' starts and aggregates)
    worker_env: dict[str, str],
    settings: BatonSettings,
) -> Iterator[LocalWorkers]:
    """An asyncio worker for the limited agent, 50 wide: only its limits hold items back."""
    assert settings.redis_url
    pool = LocalWorkers(
        settings.redis_url, [["throttle"]], concurrency=50, pool="asyncio",
        env=NO_CONTROL | worker_env, log_dir=settings.home / "logs-map-limits",
    )  # fmt: skip
    pool.start(orchestrator.app)
    yield pool
    pool.stop()


def map_of(n: int, task_type: str, batch_size: int, **parameters: Any) -> dict[str, Any]:
    return {"name": f"{n} limited items", "steps": [
        step("echo", "src", value=[{"value": i} for i in range(n)]),
        {"map": {"over": "src.value", "agent_id": "throttle", "task_type": task_type,
                 "parameters": parameters},
         "output_key": "out", "batch_size": batch_size},
    ]}  # fmt: skip


@pytest.mark.parametrize("batch_size", [1, 8])
def test_a_concurrency_limit_holds_for_every_item_of_a_map(
    orchestrator: WorkflowOrchestrator, limited_worker: LocalWorkers, raw_redis: redis.Redis,
    batch_size: int,
) -> None:  # fmt: skip
    gate = f"mapconc-{uuid.uuid4().hex[:6]}"
    wid = orchestrator.run_workflow(map_of(8, "hold", batch_size, name=gate))
    wait_gate_started(raw_redis, gate, count=3)
    # The other five items wait for a slot, and the map shows as throttled by the limit.
    [use] = eventually(
        lambda: [u for u in orchestrator.limits() if u.name == "throttle" and u.waiting == 5],
        what="five items waiting",
    )
    assert (use.concurrency, use.running) == (3, 3)
    assert len(use.waiters) == 5
    assert all(w.startswith(f"{wid}:step_2[") for w in use.waiters)
    report = orchestrator.get_workflow_status(wid)
    assert [(t.step, t.limit, t.why) for t in report.throttled_steps] == [
        ("step_2", "throttle", "concurrency")
    ]
    assert raw_redis.llen(f"testlog:gate:{gate}:started") == 3

    # Each slot given back goes to one waiting item: never a fourth running.
    for released in (3, 6):
        open_gate(raw_redis, gate, 3)
        wait_gate_started(raw_redis, gate, count=min(8, released + 3))
        assert raw_redis.llen(f"testlog:gate:{gate}:started") == min(8, released + 3)
        assert raw_redis.llen(f"testlog:gate:{gate}:passed") == released
    open_gate(raw_redis, gate, 2)
    ctx = orchestrator.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert [r["opened"] for r in ctx.shared_data["out"]] == [True] * 8
    assert orchestrator.get_workflow_status(wid).throttled_steps == []
    [use] = [u for u in orchestrator.limits() if u.name == "throttle"]
    assert (use.running, use.waiting) == (0, 0)


@pytest.mark.parametrize("batch_size", [1, 10])
def test_a_rate_limit_spaces_every_item_of_a_map(
    orchestrator: WorkflowOrchestrator, limited_worker: LocalWorkers, raw_redis: redis.Redis,
    batch_size: int,
) -> None:  # fmt: skip
    tenant = f"map-{uuid.uuid4().hex[:6]}"  # (a budget of its own: 10/s)
    orchestrator.set_limit("throttle", concurrency=0)  # (only the rate here)
    try:
        wid = orchestrator.run_workflow(map_of(30, "tick", batch_size, tenant=tenant))
        ctx = orchestrator.wait(wid, timeout=60)
    finally:
        orchestrator.reset_limit("throttle")
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    starts = sorted(map(float, raw_redis.lrange(f"testlog:tick:{wid}:{tenant}", 0, -1)))
    assert len(starts) == 30
    # Never more than 10 calls (+1 at the window's edge) in any second: the 30 take three.
    assert max(sum(1 for t in starts if s <= t < s + 1) for s in starts) <= 11
    assert starts[-1] - starts[0] >= 2.5
    assert {r["at"] for r in ctx.shared_data["out"]} == set(starts)


# --------------------------------------------------------------------------- no silent stall


@contextmanager
def split_stack(
    server: RedisServer, db: int, settings: BatonSettings, worker_env: dict[str, str],
    *, bare_queues: list[str], agents: str,
) -> Iterator[WorkflowOrchestrator]:  # fmt: skip
    """A database of the session's Redis of its own (its own queues: only the workers
    started here take its messages), with two workers: ``celery -A workers.app worker -Q
    <bare_queues>`` told its queues but loading no test agent, and ``baton worker
    --agents <agents>`` taking no control work."""
    url = server.url.rsplit("/", 1)[0] + f"/{db}"
    orch = WorkflowOrchestrator(
        url, settings=settings.model_copy(update={"redis_url": url}), local_workers=False
    )
    env = {**os.environ, **worker_env, "BATON_REDIS_URL": url}
    pool = LocalWorkers(url, [], env=env, log_dir=settings.home / f"logs-split-{db}")
    pool.log_dir.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:4]
    pool.spawn(
        [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q",
         ",".join(bare_queues), "-c", "2", "-P", "threads", "-n", f"bare{tag}@h"],
        f"bare{tag}@h", env | {"BATON_AGENT_MODULES": ""},
    )  # fmt: skip
    pool.spawn(
        [sys.executable, "-m", "workers.cli", "worker", "--agents", agents,
         "--concurrency", "2", "--hostname", f"agents{tag}@h"],
        f"agents{tag}@h", env | NO_CONTROL,
    )  # fmt: skip
    try:
        pool.wait_ready(orch.app, 90)
        yield orch
    finally:
        pool.stop()
        orch.close()


def solo_map(n: int) -> dict[str, Any]:
    return {"name": "a map of solo.note", "steps": [
        step("echo", "src", value=list(range(n))),
        {"map": {"over": "src.value", "agent_id": "solo", "task_type": "note",
                 "parameters": {"value": "x"}}, "output_key": "out"},
    ]}  # fmt: skip


def test_a_maps_start_taken_without_its_agent_is_handed_on_to_a_worker_with_it(
    redis_server: RedisServer, settings: BatonSettings, worker_env: dict[str, str]
) -> None:
    # The control queue's only worker knows no test agent (it takes the map's start).
    with split_stack(redis_server, 3, settings, worker_env, bare_queues=[CONTROL_QUEUE],
                     agents="testkit,solo") as orch:  # fmt: skip
        wid = orch.run_workflow(solo_map(5))
        ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.shared_data["out"] == [{"noted": "x"}] * 5


def test_a_maps_start_no_worker_can_run_fails_the_map_saying_why(
    redis_server: RedisServer, settings: BatonSettings, worker_env: dict[str, str]
) -> None:
    # The only worker on solo's queue is told to serve it without the module defining it.
    queues = [CONTROL_QUEUE, agent_queue("solo")]
    with split_stack(redis_server, 4, settings, worker_env, bare_queues=queues,
                     agents="testkit") as orch:  # fmt: skip
        wid = orch.run_workflow(solo_map(3))
        ctx = orch.wait(wid, timeout=30)
        report = orch.get_workflow_status(wid)
    assert ctx.status == WorkflowStatus.FAILED
    assert report.failed_step == "step_2"
    assert report.error is not None
    assert report.error.startswith("map step_2: no worker could start it: unknown agent 'solo'")
    assert "BATON_AGENT_MODULES must load it" in report.error
