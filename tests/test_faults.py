"""Faults on purpose: killed workers, a restarted or missing Redis, lost messages.

A private harness per module: its own redis-server (AOF on, restartable on its port)
and its own `baton worker` processes, with short timeouts so recovery is quick:
visibility timeout 6 s, step lease 3 s, stall detection 5 s, reaper sweeps every 1 s.
Side effects are counted in a SQLite ledger outside Redis. Every test ends by checking
the invariants: terminal state, one commit per step, increasing versions, nothing left
outstanding.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from orchestration import StateStoreError, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.model import WorkflowContext
from orchestration.settings import BatonSettings
from orchestration.state.keys import due_key
from tests.conftest import PARALLEL_AGENTS, ROOT
from tests.helpers import eventually, gated, held_at_gate, open_gate, step, wait_gate_started


@dataclass
class Harness:
    server: RedisServer
    env: dict[str, str]
    orch: WorkflowOrchestrator
    ledger: Path
    pools: list[LocalWorkers] = field(default_factory=list)

    def worker(
        self, agents: list[str], name: str, pool_name: str = "prefork", concurrency: int = 1,
        **env: str,
    ) -> LocalWorkers:  # fmt: skip
        pool = LocalWorkers(
            self.server.url,
            [agents],
            concurrency=concurrency,
            env={**self.env, **env},
            log_dir=Path(self.env["BATON_HOME"]) / f"logs-{name}",
            pool=pool_name,
        )
        pool.start(self.orch.app)
        self.pools.append(pool)
        return pool

    def stop_all(self) -> None:
        """Stop this test's workers (they would take later tests' control messages)."""
        for pool in self.pools:
            pool.stop()
        self.pools.clear()

    def finish(self, workflow_id: str, timeout: float = 60) -> WorkflowContext:
        """The workflow waited for to its end, its invariants checked; this test's workers
        are stopped either way."""
        try:
            ctx = self.orch.wait(workflow_id, timeout=timeout)
            self.check_invariants(ctx)
        finally:
            self.stop_all()
        return ctx

    def executions(self, workflow_id: str, step_id: str) -> int:
        with sqlite3.connect(self.ledger) as db:
            (n,) = db.execute(
                "SELECT count(*) FROM runs WHERE workflow=? AND step=?", (workflow_id, step_id)
            ).fetchone()
        return int(n)

    def check_invariants(self, ctx: WorkflowContext) -> None:
        assert ctx.status.is_terminal
        commits = [
            h.step for h in ctx.execution_history if h.event in ("step_completed", "step_failed")
        ]
        assert len(commits) == len(set(commits)), commits  # each step committed exactly once
        versions = [
            h.version
            for h in ctx.execution_history
            if h.event.startswith("step_") and h.version is not None
        ]
        assert versions == sorted(set(versions))  # versions only increase
        # Once drained (a killed worker's message comes back after the visibility timeout
        # and is dropped as a duplicate), nothing the workflow sent is still outstanding.
        eventually(
            lambda: not self.orch.store.outstanding(ctx.workflow_id),
            30,
            f"the drain of {ctx.workflow_id}: {self.orch.store.outstanding(ctx.workflow_id)}",
        )


ALL = PARALLEL_AGENTS + ["data_processor", "analyzer", "reporter"]
CONTROL_ONLY = ["slowapi"]  # an agent queue nothing is sent to here: in effect, control only


@pytest.fixture(scope="module")
def harness(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, worker_env: dict[str, str]
) -> Iterator[Harness]:
    home = tmp_path_factory.mktemp("faults")
    server = RedisServer(home / "redis").start()
    env = {
        **worker_env,
        "BATON_REDIS_URL": server.url,
        "BATON_HOME": str(home),
        "BATON_KEY_PREFIX": "faults",
        "BATON_VISIBILITY_TIMEOUT": "6",
        "BATON_STEP_LEASE_SECONDS": "3",
        "BATON_STALL_SECONDS": "5",
        "BATON_REAPER_INTERVAL": "1",
        "BATON_TEST_LEDGER": str(home / "ledger.sqlite"),
        "PYTHONPATH": str(ROOT),
    }
    settings = BatonSettings(
        **{
            k[6:].lower(): v
            for k, v in env.items()
            if k.startswith("BATON_") and not k.startswith("BATON_TEST")
        }
    )  # type: ignore[arg-type]
    orch = WorkflowOrchestrator(server.url, settings=settings, local_workers=False)
    h = Harness(server, env, orch, home / "ledger.sqlite")
    yield h
    for pool in h.pools:
        pool.stop()
    orch.close()
    server.stop()


@pytest.fixture
def two_workers(harness: Harness) -> Iterator[tuple[LocalWorkers, LocalWorkers]]:
    a, b = harness.worker(ALL, "a"), harness.worker(ALL, "b")
    yield a, b
    for pool in (a, b):
        pool.stop()


def gate_pid(r: redis.Redis, name: str, index: int = 0) -> int:
    return int(r.lindex(f"testlog:gate:{name}:started", index).decode().rsplit(":", 1)[1])


def worker_running(pid: int, pools: tuple[LocalWorkers, ...]) -> subprocess.Popen[bytes]:
    """The worker main process whose pool process ``pid`` is."""
    [owner] = [
        p for pool in pools for p in pool.processes
        if str(pid) in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
    ]  # fmt: skip
    return owner


def test_a_step_whose_pool_process_is_killed_is_redelivered_and_commits_once(
    harness: Harness, two_workers: object, raw_redis: redis.Redis
) -> None:
    g, wid = held_at_gate(harness.orch, raw_redis, "kill-child")

    os.kill(gate_pid(raw_redis, g), signal.SIGKILL)  # the process running the agent
    wait_gate_started(raw_redis, g, count=2, timeout=60)  # redelivered once its lease lapsed
    open_gate(raw_redis, g)
    ctx = harness.orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    lost = [h for h in ctx.execution_history if h.event == "attempt_lost"]
    assert [h.step for h in lost] == ["step_2"]
    assert ctx.task_results["step_2"].metadata["attempt"] == 2
    assert harness.executions(wid, "step_2") == 2  # the lost execution and the one committed
    harness.check_invariants(ctx)


def test_a_worker_killed_outright_loses_nothing(
    harness: Harness, two_workers: tuple[LocalWorkers, LocalWorkers], raw_redis: redis.Redis
) -> None:
    g, wid = held_at_gate(harness.orch, raw_redis, "kill-worker")
    # SIGKILL the whole worker that runs it: main process and pool.
    os.killpg(worker_running(gate_pid(raw_redis, g), two_workers).pid, signal.SIGKILL)

    # Its unacknowledged message comes back after the visibility timeout, to the other worker.
    wait_gate_started(raw_redis, g, count=2, timeout=60)
    open_gate(raw_redis, g)
    ctx = harness.orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert [h.step for h in ctx.execution_history if h.event == "attempt_lost"] == ["step_2"]
    assert harness.executions(wid, "step_3") == 1
    harness.check_invariants(ctx)


def test_a_worker_told_to_stop_mid_step_finishes_it_first(
    harness: Harness, two_workers: tuple[LocalWorkers, LocalWorkers], raw_redis: redis.Redis
) -> None:
    g, wid = held_at_gate(harness.orch, raw_redis, "term")
    owner = worker_running(gate_pid(raw_redis, g), two_workers)

    owner.terminate()  # SIGTERM: warm shutdown waits for the running task
    open_gate(raw_redis, g)
    owner.wait(timeout=60)
    ctx = harness.orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert harness.executions(wid, "step_2") == 1  # finished, not redone
    assert not [h for h in ctx.execution_history if h.event == "attempt_lost"]
    harness.check_invariants(ctx)


def held_async(
    harness: Harness, r: redis.Redis, name: str, n: int
) -> tuple[str, str, LocalWorkers]:
    """A group of ``n`` async steps, all held at a new gate by an asyncio worker (20 wide)
    of its own: the gate, the workflow id and that worker."""
    gate = f"{name}-{uuid.uuid4().hex[:6]}"
    pool = harness.worker(["aio"], name, "asyncio", 20)
    member = {"agent_id": "aio", "task_type": "await_gate", "parameters": {"name": gate}}
    wid = harness.orch.run_workflow(
        {"name": "async group", "steps": [{"parallel": [member] * n, "output_key": "g"}]}
    )
    wait_gate_started(r, gate, count=n)
    return gate, wid, pool


def test_an_asyncio_worker_killed_mid_step_loses_nothing(
    harness: Harness, raw_redis: redis.Redis
) -> None:
    g, wid, first = held_async(harness, raw_redis, "aio-kill", 10)
    [proc] = first.processes
    os.killpg(proc.pid, signal.SIGKILL)  # ten coroutines in flight, gone at once
    proc.wait()

    harness.worker(["aio"], "aio-b", "asyncio", 20)
    wait_gate_started(raw_redis, g, count=20, timeout=60)  # each redelivered once
    open_gate(raw_redis, g, 10)
    ctx = harness.orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["g"]["successful_tasks"] == 10
    lost = {h.step for h in ctx.execution_history if h.event == "attempt_lost"}
    assert lost == {f"step_1.{i}" for i in range(1, 11)}
    for i in range(1, 11):
        assert harness.executions(wid, f"step_1.{i}") == 2  # the lost one and the committed
    harness.check_invariants(ctx)
    harness.stop_all()


def test_an_asyncio_worker_told_to_stop_finishes_its_running_steps(
    harness: Harness, raw_redis: redis.Redis
) -> None:
    g, wid, pool = held_async(harness, raw_redis, "aio-term", 5)
    [proc] = pool.processes

    proc.terminate()  # SIGTERM: warm shutdown waits for the running steps
    [log] = pool.log_dir.glob("worker-*.log")
    eventually(lambda: b"Warm shutdown" in log.read_bytes(), what="the warm shutdown begun")
    open_gate(raw_redis, g, 5)
    proc.wait(timeout=60)
    harness.worker(CONTROL_ONLY, "aio-control")  # the group's aggregate runs elsewhere
    ctx = harness.orch.wait(wid, timeout=30)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert not [h for h in ctx.execution_history if h.event == "attempt_lost"]
    for i in range(1, 6):
        assert harness.executions(wid, f"step_1.{i}") == 1  # finished, not redone
    harness.check_invariants(ctx)
    harness.stop_all()


def test_the_aggregate_survives_its_worker_dying(harness: Harness, raw_redis: redis.Redis) -> None:
    g = f"chord-{uuid.uuid4().hex[:6]}"
    harness.worker(ALL, "members", BATON_WORKER_NO_CONTROL="1")
    holder = harness.worker(CONTROL_ONLY, "control-held", BATON_TEST_AGGREGATE_GATE=g)
    wid = harness.orch.run_workflow(
        {
            "steps": [
                {
                    "parallel": [step("echo", "m1"), step("echo", "m2"), step("echo", "m3")],
                    "output_key": "g",
                },
            ]
        }
    )
    wait_gate_started(raw_redis, g)  # the callback is running, held at the gate

    for proc in holder.processes:
        os.killpg(proc.pid, signal.SIGKILL)
    harness.worker(CONTROL_ONLY, "control-spare")  # the message comes back to it
    ctx = harness.finish(wid)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["g"]["successful_tasks"] == 3
    committed = [h.step for h in ctx.execution_history if h.event == "step_completed"]
    assert committed.count("step_1") == 1  # the aggregate, exactly once
    assert [harness.executions(wid, f"step_1.{i}") for i in (1, 2, 3)] == [1, 1, 1]


def test_a_lost_chord_callback_is_found_by_the_reaper(
    harness: Harness, raw_redis: redis.Redis
) -> None:
    harness.worker(ALL, "members", BATON_WORKER_NO_CONTROL="1")
    wid = harness.orch.run_workflow(
        {
            "steps": [
                step("echo", "w"),
                {"parallel": [step("echo", "x"), step("echo", "y")], "output_key": "g"},
                step("echo", "z"),
            ]
        }
    )
    store = harness.orch.store
    # The members commit; their callback waits on baton.control, where nobody consumes...
    eventually(
        lambda: len(store.results(wid)) == 3 and store.redis.llen("baton.control"),
        60,
        "the members and their callback message",
    )
    store.redis.delete("baton.control")  # ...and is lost
    harness.worker(CONTROL_ONLY, "control")
    ctx = harness.finish(wid)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert [h.step for h in ctx.execution_history if h.event == "reaper_redispatched"] == ["step_2"]
    assert ctx.shared_data["g"]["successful_tasks"] == 2
    assert [harness.executions(wid, s) for s in ("step_2.1", "step_2.2", "step_3")] == [1, 1, 1]


def test_redis_restart_mid_workflow_loses_no_handoff_state(
    harness: Harness, two_workers: object, raw_redis: redis.Redis
) -> None:
    g, wid = held_at_gate(harness.orch, raw_redis, "restart")

    harness.server.stop()  # SIGTERM: the AOF is flushed
    harness.server.start()  # same port, same directory
    open_gate(raw_redis, g)
    ctx = harness.orch.wait(wid, timeout=90)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert sorted(ctx.shared_data) == ["a", "c", "held"]
    assert harness.executions(wid, "step_2") == 1
    harness.check_invariants(ctx)


def test_waiting_workflows_survive_killed_workers_and_a_redis_restart(
    harness: Harness, raw_redis: redis.Redis
) -> None:
    """Workflows waiting for a signal and for a timer; every worker SIGKILLed and Redis
    restarted while they wait, past the timer's time; then a worker comes back."""
    first = harness.worker(ALL, "waits-a")
    echo = {"agent_id": "testkit", "task_type": "echo", "output_key": "after",
            "parameters": {"value": 1}}  # fmt: skip
    signalled = harness.orch.run_workflow(
        {"name": "approve", "steps": [{"wait_for": "ok", "output_key": "ok"}, echo]}
    )
    sleeping = harness.orch.run_workflow(
        {"name": "nap", "steps": [{"sleep": 2, "output_key": "nap"}, echo]}
    )
    for wid in (signalled, sleeping):
        harness.orch.wait(wid, timeout=30, until=("waiting",))
    [(_, due_ms)] = harness.orch.redis.zrange(due_key(harness.orch.store.prefix), 0, -1,
                                                 withscores=True)  # fmt: skip
    for proc in first.processes:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first.processes.clear()
    harness.server.stop()  # SIGTERM: the AOF is flushed
    # Everything is down when the timer is due.
    eventually(lambda: time.time() * 1000 > due_ms + 500, what="the timer's due time past")
    harness.server.start()
    assert harness.orch.get_workflow_status(signalled).status == WorkflowStatus.WAITING

    harness.worker(ALL, "waits-b")
    assert harness.orch.signal(signalled, "ok", {"yes": True}) == "applied"
    for wid in (signalled, sleeping):
        ctx = harness.orch.wait(wid, timeout=60)
        assert ctx.status == WorkflowStatus.COMPLETED
        assert ctx.shared_data["after"]["value"] == 1
        harness.check_invariants(ctx)
    assert harness.orch.get_context(signalled).shared_data["ok"] == {"yes": True}
    harness.stop_all()


def test_redis_down_at_submit_is_a_clear_error_and_leaves_nothing(
    harness: Harness, two_workers: object
) -> None:
    wid = f"submit-{uuid.uuid4().hex[:6]}"
    harness.server.stop()
    try:
        with pytest.raises(StateStoreError, match="cannot reach Redis"):
            harness.orch.run_workflow(gated("never"), workflow_id=wid)
    finally:
        harness.server.start()

    store = harness.orch.store
    assert not store.redis.exists(*store.keys(wid).all())
    assert wid not in [i.decode() for i in store.redis.zrange("faults:workflows", 0, -1)]
    # Workers idle through the outage reconnect and take new work.
    ctx = harness.orch.wait(harness.orch.run_workflow({"steps": [step("echo", "after")]}), 90)
    assert ctx.status == WorkflowStatus.COMPLETED


def test_a_step_longer_than_the_visibility_timeout_runs_once(
    harness: Harness, two_workers: object, raw_redis: redis.Redis
) -> None:
    g, wid = held_at_gate(harness.orch, raw_redis, "long")

    # Past the 6 s visibility timeout the message is delivered again; the lease holds it off.
    def deferred() -> bool:
        history = harness.orch.get_context(wid).execution_history
        return any(h.event == "redelivery_deferred" and h.step == "step_2" for h in history)

    eventually(deferred, 30, "the redelivered copy to meet the lease")
    open_gate(raw_redis, g)
    ctx = harness.orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert raw_redis.llen(f"testlog:gate:{g}:started") == 1  # never executed twice
    assert harness.executions(wid, "step_2") == 1
    harness.check_invariants(ctx)


def test_a_workflow_past_its_deadline_is_failed_with_the_reason(
    harness: Harness, two_workers: object
) -> None:
    # No worker consumes the solo agent's queue here: the step never runs; the workers'
    # reapers enforce the deadline.
    wid = harness.orch.run_workflow(
        {
            "deadline_seconds": 2,
            "steps": [{"agent_id": "solo", "task_type": "note", "output_key": "n"}],
        }
    )
    ctx = harness.orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.error == "deadline exceeded"
    assert [h.event for h in ctx.execution_history][-2:] == ["workflow_reaped", "state_restored"]


def map_of_held(tag: str, n: int, **options: object) -> dict[str, object]:
    """A map over ``n`` items that each wait at the gate ``tag`` (tests/agents.square)."""
    items = [{"value": i, "hold": 60} for i in range(n)]
    return {
        "steps": [
            step("echo", "src", value=items),
            {"map": {"over": "src.value", "agent_id": "testkit", "task_type": "square",
                     "parameters": {"tag": tag}}, "output_key": "squares", **options},
        ]
    }  # fmt: skip


def test_a_map_whose_worker_is_killed_mid_batch_loses_no_item(
    harness: Harness, raw_redis: redis.Redis
) -> None:
    tag = f"map-kill-{uuid.uuid4().hex[:6]}"
    a, b = harness.worker(ALL, "map-a", concurrency=2), harness.worker(ALL, "map-b", concurrency=2)
    wid = harness.orch.run_workflow(map_of_held(tag, 16, batch_size=2, max_concurrency=4))
    wait_gate_started(raw_redis, tag, count=2)
    # SIGKILL the whole worker running the first item held: its batch is taken, not done.
    os.killpg(worker_running(gate_pid(raw_redis, tag), (a, b)).pid, signal.SIGKILL)
    open_gate(raw_redis, tag, times=200)
    ctx = harness.finish(wid, 90)

    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.shared_data["squares"] == [{"index": i, "square": i * i} for i in range(16)]
    lost = [h.step for h in ctx.execution_history if h.event == "attempt_lost"]
    assert lost and all(s.startswith("step_2#") for s in lost)
    runs = {int(k): int(v) for k, v in raw_redis.hgetall(f"testlog:map:{tag}:runs").items()}
    assert sorted(runs) == list(range(16)) and set(runs.values()) <= {1, 2}


def test_a_map_whose_messages_are_lost_is_sent_on_by_the_reaper(
    harness: Harness, raw_redis: redis.Redis
) -> None:
    tag = f"map-lost-{uuid.uuid4().hex[:6]}"
    first = harness.worker(ALL, "map-lost")
    wid = harness.orch.run_workflow(map_of_held(tag, 8, max_concurrency=2))
    wait_gate_started(raw_redis, tag)
    for proc in first.processes:
        os.killpg(proc.pid, signal.SIGKILL)
    store = harness.orch.store
    store.redis.delete("agent.testkit", "unacked", "unacked_index")  # every message lost
    open_gate(raw_redis, tag, times=200)
    harness.worker(ALL, "map-after")
    ctx = harness.finish(wid, 90)

    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert [h.step for h in ctx.execution_history if h.event == "reaper_redispatched"] == ["step_2"]
    assert [r["index"] for r in ctx.shared_data["squares"]] == list(range(8))
