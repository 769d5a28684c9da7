"""A Redis failover costs seconds, never an acknowledged commit (issue 23).

Real processes on loopback: three data nodes and three Sentinels (``tests/ha.py``), two
``baton worker`` processes and this client, all on the ``redis+sentinel://`` URL.
Workflows of five steps run while the primary is killed (SIGKILL), and again while it is
frozen (SIGSTOP past the Sentinels' 1 s timeout, then SIGCONT). The checker reads the
ledger the workers write outside Redis (``tests/failover_agents.py``) and asserts: every
workflow completed; each step's commit acknowledged exactly once; the result in the final
state is the acknowledged run's; an agent ran again only for an attempt whose commit was
not acknowledged; no worker process restarted; and the thawed primary came back as a
replica.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestration import WorkflowOrchestrator, WorkflowStatus
from orchestration.client.embedded import LocalWorkers
from orchestration.settings import BatonSettings
from tests.ha import RedisHA
from tests.helpers import ROOT, eventually

STEPS = 5
WORKFLOWS = 16


@dataclass
class Cluster:
    ha: RedisHA
    orch: WorkflowOrchestrator
    workers: LocalWorkers
    ledger: Path
    pids: list[int]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("failover")
    ledger = root / "ledger.jsonl"
    with RedisHA(root / "ha") as ha:
        env = {
            "BATON_REDIS_URL": ha.url,
            "BATON_KEY_PREFIX": f"fo-{uuid.uuid4().hex[:6]}",
            "BATON_AGENT_MODULES": "tests.failover_agents",
            "BATON_HOME": str(root / "home"),
            "BATON_TEST_LEDGER": str(ledger),
            "BATON_STEP_LEASE_SECONDS": "3",
            "BATON_FAILOVER_TIMEOUT": "30",
            # A message popped from its queue on a primary that died before the pop's
            # record (unacked) reached a replica is nowhere: the reaper sends its
            # workflow on once nothing moved for this long.
            "BATON_STALL_SECONDS": "10",
            "BATON_REAPER_INTERVAL": "2",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        settings = BatonSettings(
            redis_url=ha.url, key_prefix=env["BATON_KEY_PREFIX"], home=root / "home",
            agent_modules=["tests.failover_agents"],
        )  # fmt: skip
        assert settings.write_replicas == 1  # the default on Sentinel
        orch = WorkflowOrchestrator(ha.url, settings=settings, local_workers=False)
        workers = LocalWorkers(
            ha.url, [["ledger"], ["ledger"]], concurrency=2, env=env, log_dir=root / "logs"
        )
        workers.start(orch.app)
        try:
            pids = [p.pid for p in workers.processes]
            yield Cluster(ha, orch, workers, ledger, pids)
        finally:
            workers.stop()
            orch.close()


def _flow(n: int) -> dict[str, Any]:
    steps = [
        {"agent_id": "ledger", "task_type": "digest", "output_key": f"d{i}",
         "parameters": {"values": list(range(n, n + 50 + i))}}
        for i in range(STEPS)
    ]  # fmt: skip
    return {"name": f"failover {n}", "steps": steps}


def _ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _runs_so_far(path: Path) -> int:
    return sum("run" in e for e in _ledger(path))


def _ends_of_runs(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Each run's end (None while a run has none yet). A message may come more than once
    (given back, redelivered); a process runs one task at a time, so a run's end is the
    next end of its task in its process (an end with no run before it is a delivery that
    did not call the agent: its step done, or leased elsewhere)."""
    end_of: dict[str, dict[str, Any]] = {}
    running: dict[tuple[str, int], str] = {}
    for e in entries:
        if "run" in e:
            running[(e["task"], e["pid"])] = e["run"]
        elif (run := running.pop((e["end"], e["pid"]), None)) is not None:
            end_of[run] = e
    return None if running else end_of


def _check(cluster: Cluster, ids: list[str]) -> dict[str, int]:
    """Every promise of the issue's checker; the agent re-runs seen, per cause."""
    contexts = {wid: cluster.orch.wait(wid, timeout=120) for wid in ids}
    assert {wid: c.status for wid, c in contexts.items()} == {
        wid: WorkflowStatus.COMPLETED for wid in ids
    }

    def paired() -> dict[str, dict[str, Any]] | None:  # (a task ends after its commit)
        return _ends_of_runs(_ledger(cluster.ledger))

    end_of = eventually(paired, 30, "every run's delivery to end")
    assert end_of is not None
    entries = _ledger(cluster.ledger)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        if "run" in e and e["wf"] in contexts:
            runs[(e["wf"], e["step"])].append(e)
    reruns = 0
    for wid, ctx in contexts.items():
        for step_id, result in ctx.task_results.items():
            attempts = runs[(wid, step_id)]
            assert attempts, f"{wid} {step_id} completed with no run in the ledger"
            acked = [
                a for a in attempts
                if end_of[a["run"]]["state"] == "SUCCESS"
                and end_of[a["run"]]["retval"].startswith("completed")
            ]  # fmt: skip
            assert len(acked) == 1, f"{wid} {step_id}: acknowledged {len(acked)} times"
            assert acked[0] is attempts[-1], f"{wid} {step_id}: ran again after its ack"
            assert result.result["token"] == acked[0]["run"], (
                f"{wid} {step_id}: the final state holds a run other than the acknowledged one"
            )
            reruns += len(attempts) - 1
    assert [p.pid for p in cluster.workers.processes] == cluster.pids
    assert all(p.poll() is None for p in cluster.workers.processes), "a worker exited"
    return {"workflows": len(ids), "reruns": reruns}


def _under_load(cluster: Cluster, fault: str) -> list[str]:
    """Start the workflows and, once about a fifth of their steps ran, apply ``fault``."""
    start = _runs_so_far(cluster.ledger)
    ids = [cluster.orch.run_workflow(_flow(i)) for i in range(WORKFLOWS)]
    eventually(lambda: _runs_so_far(cluster.ledger) - start >= WORKFLOWS * STEPS // 5, 60)
    old = cluster.ha.primary()
    if fault == "kill":
        node = cluster.ha.kill_primary()
        cluster.ha.wait_failover(old, timeout=20)
        cluster.ha.restart(node)
    else:
        node = cluster.ha.freeze_primary()
        cluster.ha.wait_failover(old, timeout=20)
        cluster.ha.thaw(node)
        eventually(lambda: node.replication().get("role") == "slave", 20)
    return ids


def test_a_killed_primary_loses_no_acknowledged_commit(cluster: Cluster) -> None:
    ids = _under_load(cluster, "kill")
    seen = _check(cluster, ids)
    assert seen["workflows"] == WORKFLOWS
    print(f"kill: {seen['reruns']} agent re-run(s) for unacknowledged commits")


def test_a_frozen_primary_comes_back_a_replica_and_loses_nothing(cluster: Cluster) -> None:
    ids = _under_load(cluster, "freeze")
    seen = _check(cluster, ids)
    assert seen["workflows"] == WORKFLOWS
    print(f"freeze: {seen['reruns']} agent re-run(s) for unacknowledged commits")
