"""The Python API seen from more than one process, and the ``baton`` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis

from orchestration import WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import open_gate, step, wait_gate_started

ECHO = {"agent_id": "testkit", "task_type": "echo", "output_key": "out", "parameters": {"value": 7}}


def baton(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def baton_run(
    file: Path, text: str, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``baton run`` on ``file``, written with ``text`` first."""
    file.write_text(text)
    return baton("run", str(file), *args, env=env)


def run_one_step(
    step: str, tmp_path: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``baton run --wait`` on a workflow "cli" of one testkit step: ``step``, the rest of
    its YAML flow mapping."""
    text = f"name: cli\nsteps:\n  - {{agent_id: testkit, {step}}}\n"
    return baton_run(tmp_path / "cli.yaml", text, "--wait", env=env)


def test_created_workflows_wait_for_start_and_are_visible_to_another_process(
    orch: WorkflowOrchestrator, worker_env: dict[str, str]
) -> None:
    wid = orch.create_workflow({"name": "two processes", "steps": [ECHO]})
    assert orch.get_workflow_status(wid).status == WorkflowStatus.CREATED

    script = (
        "import sys\nfrom orchestration.client import WorkflowOrchestrator\n"
        "o = WorkflowOrchestrator(local_workers=False)\n"
        "o.start_workflow(sys.argv[1])\n"
        "print(o.wait(sys.argv[1], timeout=60).model_dump_json())\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, wid],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 0, other.stderr
    seen_there = json.loads(other.stdout)

    here = orch.get_workflow_status(wid)
    assert seen_there["status"] == here.status == WorkflowStatus.COMPLETED
    assert seen_there["shared_data"]["out"]["value"] == 7
    assert (here.progress, here.completion_percentage, here.shared_data_keys) == (
        "1/1",
        100.0,
        ["out"],
    )


def test_cli_runs_a_workflow_and_reports_its_status(
    worker_env: dict[str, str], workers: object, tmp_path: Path
) -> None:
    ran = run_one_step(
        "task_type: echo, output_key: out, parameters: {value: 42}", tmp_path, worker_env
    )
    assert ran.returncode == 0, ran.stderr
    wid = ran.stdout.splitlines()[0].strip()
    assert f"cli {wid}: completed in " in ran.stdout  # it ends with what it made

    shown = baton("status", wid, "--json", env=worker_env)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert (status["status"], status["progress"], status["shared_data_keys"]) == (
        "completed",
        "1/1",
        ["out"],
    )


def test_cli_exits_non_zero_when_the_workflow_fails(
    worker_env: dict[str, str], workers: object, tmp_path: Path
) -> None:
    failing = "task_type: fail, parameters: {message: 'nope [deliberate failure]'}"
    ran = run_one_step(failing, tmp_path, worker_env)
    assert ran.returncode == 1
    assert "ValueError: nope [deliberate failure]" in ran.stderr  # verbatim, brackets too


def test_cli_rejects_an_invalid_file_with_the_field(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    ran = baton_run(
        tmp_path / "bad.yaml", "steps:\n  - {agent_id: nobody, task_type: echo}\n", env=worker_env
    )
    assert ran.returncode == 2
    assert "steps[0].agent_id" in ran.stderr


def test_cli_lists_agents_with_their_queues(worker_env: dict[str, str]) -> None:
    listed = baton("agents", "--json", env=worker_env)
    agents = {a["agent_id"]: a for a in json.loads(listed.stdout)}
    assert {
        "data_processor",
        "analyzer",
        "reporter",
        "validator",
        "enricher",
        "classifier",
        "scorer",
        "testkit",
    } <= agents.keys()
    assert agents["analyzer"]["queue"] == "agent.analyzer"
    assert {"statistical_analysis", "trend_analysis"} <= set(agents["analyzer"]["task_types"])


def test_cli_controls_a_workflow(
    orch: WorkflowOrchestrator, worker_env: dict[str, str], raw_redis: redis.Redis
) -> None:
    wid = orch.run_workflow({"steps": [step("gate", "g", name="cli"), step("echo", "e")]})
    wait_gate_started(raw_redis, "cli")

    paused = baton("pause", wid, env=worker_env)
    assert (paused.returncode, paused.stdout.strip()) == (0, f"{wid}: paused (0/2)")
    again = baton("pause", wid, env=worker_env)
    assert again.returncode == 2  # already paused: refused, saying why
    assert "is paused, not running or waiting: cannot make it paused" in again.stderr
    resumed = baton("resume", wid, env=worker_env)
    assert resumed.stdout.strip() == f"{wid}: running (0/2)"
    cancelled = baton("cancel", wid, env=worker_env)
    assert cancelled.stdout.strip() == f"{wid}: cancelled (0/2)"
    open_gate(raw_redis, "cli")

    listed = baton("checkpoints", wid, "--json", env=worker_env)
    assert [p["version"] for p in json.loads(listed.stdout)] == [0]


def test_expired_workflows_leave_the_index_and_live_ones_stay(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    """What the reaper does each sweep: ids whose state has expired leave the index."""
    store = orch.store
    expired = orch.create_workflow({"name": "old", "steps": [ECHO]})
    alive = orch.create_workflow({"name": "kept", "steps": [ECHO]})
    raw_redis.delete(*store.keys(expired).all())  # what expiry does once retention is up
    index = f"{store.prefix}:workflows"
    assert {expired, alive} <= {i.decode() for i in raw_redis.zrange(index, 0, -1)}

    dropped, _ = store.index.prune(before=float("inf"), batch=100_000)

    ids = {i.decode() for i in raw_redis.zrange(index, 0, -1)}
    assert dropped >= 1
    assert expired not in ids
    assert alive in ids
