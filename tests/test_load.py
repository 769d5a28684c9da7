"""Load: 1,000 concurrent workflows on two worker processes, calm and under chaos.

Mixed sequential and parallel workflows of real built-in agents on small data. The
invariants: every workflow completes, each step commits exactly once, and Redis memory
returns near where it started once retention expires. Wall time and workflows/s are
printed (figures belong in the benchmark and the closing note, not in assertions).
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestration import WorkflowContext, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.settings import BatonSettings
from tests.conftest import ROOT
from tests.helpers import eventually

N = int(os.environ.get("BATON_TEST_LOAD", "1000"))
AGENTS = ["data_processor", "analyzer", "validator", "classifier", "scorer"]
RETENTION = 8


def task(agent: str, task_type: str, key: str, **parameters: Any) -> dict[str, Any]:
    return {"agent_id": agent, "task_type": task_type, "output_key": key, "parameters": parameters}


def definition(i: int) -> dict[str, Any]:
    head = [
        task("data_processor", "extract_data", "raw", limit=40 + i % 20),
        task("data_processor", "clean_data", "cleaned_records", input_key="raw"),
    ]
    if i % 2:
        stats = task("analyzer", "statistical_analysis", "stats", analysis_type="basic")
        return {"name": f"seq-{i}", "steps": [*head, stats]}
    group = {
        "parallel": [
            task("validator", "validate_records", "v"),
            task("classifier", "classify_records", "c"),
            task("scorer", "score_records", "s"),
        ],
        "output_key": "g",
    }
    return {"name": f"par-{i}", "steps": [*head, group]}


class Stack:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.server = RedisServer(home / "redis").start()
        self.env = {
            **env,
            "BATON_REDIS_URL": self.server.url,
            "BATON_HOME": str(home),
            "BATON_KEY_PREFIX": "load",
            "BATON_RETENTION_SECONDS": str(RETENTION),
            "BATON_RESULT_EXPIRES": str(RETENTION),
            "BATON_VISIBILITY_TIMEOUT": "10",
            "BATON_STEP_LEASE_SECONDS": "4",
            "BATON_STALL_SECONDS": "15",
            "BATON_REAPER_INTERVAL": "2",
            "BATON_LOG_FORMAT": "text",
            "PYTHONPATH": str(ROOT),
        }
        settings = BatonSettings(
            redis_url=self.server.url,
            key_prefix="load",
            home=home,
            retention_seconds=RETENTION,
            result_expires=RETENTION,
        )
        self.orch = WorkflowOrchestrator(self.server.url, settings=settings, local_workers=False)
        self.workers: list[LocalWorkers] = []
        self.home = home

    def worker(self) -> LocalWorkers:
        pool = LocalWorkers(
            self.server.url, [AGENTS], concurrency=1, env=self.env, log_dir=self.home / "logs"
        )
        pool.start(self.orch.app)
        self.workers.append(pool)
        return pool

    def close(self) -> None:
        for pool in self.workers:
            pool.stop()
        self.orch.close()
        self.server.stop()


@pytest.fixture
def stack(tmp_path: Path, worker_env: dict[str, str]) -> Iterator[Stack]:
    s = Stack(tmp_path, {k: v for k, v in worker_env.items() if k != "BATON_AGENT_MODULES"})
    yield s
    s.close()


def run_load(stack: Stack, chaos: bool) -> None:
    r: redis.Redis = stack.orch.store.redis
    live = [stack.worker(), stack.worker()]
    r.memory_purge() if hasattr(r, "memory_purge") else None
    start_memory = int(r.info("memory")["used_memory"])
    t0 = time.monotonic()
    ids = [
        stack.orch.run_workflow(definition(i), workflow_id=f"load-{uuid.uuid4().hex[:10]}")
        for i in range(N)
    ]
    kills = 0
    next_kill = time.monotonic() + 20
    done: dict[str, WorkflowContext] = {}  # read as each one ends (its state then expires)

    def settled() -> bool:
        nonlocal kills, next_kill
        if chaos and time.monotonic() > next_kill:
            victim = live.pop(random.randrange(len(live)))
            for proc in victim.processes:
                os.killpg(proc.pid, signal.SIGKILL)
            victim.processes.clear()
            live.append(stack.worker())
            kills += 1
            next_kill = time.monotonic() + 20
        pending = [w for w in ids if w not in done]
        pipe = r.pipeline(transaction=False)
        for wid in pending:
            pipe.hget(stack.orch.store.keys(wid).meta, "status")
        for wid, status in zip(pending, pipe.execute(), strict=True):
            if status in (b"completed", b"failed", b"cancelled"):
                done[wid] = stack.orch.get_context(wid)
        return len(done) == len(ids)

    eventually(settled, 900, f"{N} workflows to finish")
    wall = time.monotonic() - t0
    duplicates = sum(
        h.event in ("duplicate_dropped", "commit_refused")
        for c in done.values()
        for h in c.execution_history
    )
    label = f"{N} workflows{' under chaos' if chaos else ''}"
    print(
        f"\n{label}: {wall:.1f}s, {N / wall:.1f} workflows/s, {kills} worker kills,"
        f" {duplicates} duplicate deliveries dropped"
    )

    for wid, ctx in done.items():
        assert ctx.status == WorkflowStatus.COMPLETED, (wid, ctx.error)
        commits = [
            h.step for h in ctx.execution_history if h.event in ("step_completed", "step_failed")
        ]
        assert len(commits) == len(set(commits)) == len(ctx.task_results), (wid, commits)
        if "g" in ctx.shared_data:
            assert ctx.shared_data["g"]["total_tasks"] == 3  # each aggregate got its 3 members

    # Once retention has expired, finished workflows leave (nearly) nothing behind.
    def memory_back() -> bool:
        return int(r.info("memory")["used_memory"]) < start_memory + 3 * 2**20

    # (the last to finish, under chaos, may have finished well after the last submitted)
    eventually(lambda: not any(r.scan_iter("load:wf:*", count=1000)), RETENTION + 60, "expiry")
    # ... and the workers' reapers drop them from the index of workflows as well.
    eventually(lambda: r.zcard("load:workflows") == 0, 30, "the index to drop expired ids")
    eventually(memory_back, 60, "Redis memory to return near its start")


@pytest.mark.load
def test_a_thousand_concurrent_workflows_all_complete_once(stack: Stack) -> None:
    run_load(stack, chaos=False)


@pytest.mark.load
def test_a_thousand_workflows_survive_a_worker_killed_every_20_seconds(stack: Stack) -> None:
    run_load(stack, chaos=True)
