"""What people read from the ``baton`` command, run as a real subprocess against real
workers: tables that fit 80 columns with their ids whole, ``watch`` lines that show text
as text and name each thing one way, ``status`` that counts throttled steps per limit."""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers
from tests.helpers import eventually, open_gate, step, wait_gate_started
from tests.test_client import baton
from tests.test_limits import two_limited_workers  # noqa: F401  (a fixture: the throttle's)


def narrow(worker_env: dict[str, str], *args: str) -> list[str]:
    """The command's output lines at 80 columns (none longer), after a clean exit."""
    ran = baton(*args, env={**worker_env, "COLUMNS": "80"})
    assert ran.returncode == 0 and ran.stderr == "", ran.stderr
    lines = [line.rstrip() for line in ran.stdout.splitlines()]
    assert lines and max(len(line) for line in lines) <= 80, ran.stdout
    return lines


def whole(wid: str, lines: list[str]) -> bool:
    return any(wid in line for line in lines)


def test_list_checkpoints_and_waiting_fit_80_columns_with_ids_whole(
    orchestrator: WorkflowOrchestrator, workers: LocalWorkers, worker_env: dict[str, str]
) -> None:
    long_name = "a workflow whose name is far too long for any narrow terminal at all"
    wid = orchestrator.run_workflow({"name": long_name, "steps": [
        step("echo", "a", value="x"),
        {"workflow": {"name": "child", "steps": [step("echo", "b")]}},
        {"wait_for": "legal_approval", "output_key": "ok"},
    ]})  # fmt: skip
    try:
        orchestrator.wait(wid, timeout=60, until=("waiting",))
        child = f"{wid}.step_2"

        listed = narrow(worker_env, "list")
        assert whole(wid, listed) and whole(child, listed)  # (a child's id is longer)
        assert listed[0].split()[:2] == ["workflow_id", "status"]
        [row] = [line for line in listed if line.startswith(f"{wid} ")]
        assert row.split()[1:3] == ["waiting", "2/3"]

        points = narrow(worker_env, "checkpoints", wid)
        assert points[0].split()[:3] == ["version", "event", "step"]
        assert points[2].split()[:2] == ["0", "workflow_created"]
        assert [line.split()[:3] for line in points[3:5]] == [
            ["1", "step_completed", "step_1"],
            ["2", "step_completed", "step_2"],
        ]

        waits = narrow(worker_env, "waiting")
        [row] = [line for line in waits if line.startswith(f"{wid} ")]
        assert row.split()[1:4] == ["step_3", "signal", "legal_approval"]
    finally:
        orchestrator.cancel_workflow(wid)


def test_watch_shows_text_as_text_map_items_one_way_and_no_sub_workflow_as_a_wait(
    orchestrator: WorkflowOrchestrator, workers: LocalWorkers, worker_env: dict[str, str]
) -> None:
    wid = orchestrator.run_workflow({"name": "shapes", "steps": [
        step("echo", "src", value=[{"value": i} for i in range(5)]),
        {"map": {"over": "src.value", "agent_id": "testkit", "task_type": "square"},
         "output_key": "squares", "batch_size": 2},
        {"workflow": {"name": "child", "steps": [step("echo", "b")]}},
        {"wait_for": "never", "output_key": "never"},
    ]})  # fmt: skip
    try:
        eventually(lambda: orchestrator.get_context(wid).task_results.get("step_3"),
                   what="the sub-workflow step to commit")  # fmt: skip
        # What a step of it emits, as a worker records it (a map item is named step[index]).
        orchestrator.store.record_events([
            (wid, "step_4", "emitted", json.dumps({"greeting": "Grüße, señor"})),
            (wid, "step_4", "emitted", json.dumps("naïve café")),
            (wid, "step_2[3]", "progress", json.dumps({"done": 1, "total": 1, "message": "ü"})),
        ])  # fmt: skip
        ran = baton("watch", wid, "--timeout", "3", env=worker_env)
        as_json = baton("watch", wid, "--json", "--timeout", "1", env=worker_env)
    finally:
        orchestrator.cancel_workflow(wid)
    assert ran.returncode == 4, ran.stderr  # (no signal comes: the watch times out)
    lines = [line.split(" ", 1)[1] for line in ran.stdout.splitlines()]
    assert 'step_4 {"greeting":"Grüße, señor"}' in lines
    assert "step_4 naïve café" in lines and "step_2[3] progress 1/1 ü" in lines
    assert "\\u00" not in ran.stdout
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {"greeting": "Grüße, señor"} in [e["data"] for e in events]
    assert "Grüße" in as_json.stdout and "\\u00" not in as_json.stdout
    # A map's batches are batches; only its items are named step_2[index].
    assert "step_2 batch 0 started" in lines and "#" not in ran.stdout
    # The sub-workflow step starts its child; it is no wait.
    child = f"{wid}.step_3"
    assert f"step_3 started sub-workflow {child}" in lines
    assert f"workflow waiting (on sub-workflow {child})" in lines
    assert not [line for line in lines if line.startswith("step_3 wait")]


@pytest.mark.usefixtures("two_limited_workers")
def test_status_counts_throttled_steps_per_limit_and_limits_fit_80_columns(
    orchestrator: WorkflowOrchestrator,
    raw_redis: redis.Redis,
    worker_env: dict[str, str],
) -> None:
    g = f"cli-conc-{uuid.uuid4().hex[:6]}"
    member = {"agent_id": "throttle", "task_type": "hold", "parameters": {"name": g}}
    wid = orchestrator.run_workflow(
        {"name": "9 under 3", "steps": [{"parallel": [member] * 9, "output_key": "held"}]}
    )
    try:
        wait_gate_started(raw_redis, g, count=3)
        eventually(lambda: len(orchestrator.get_workflow_status(wid).throttled_steps) == 6,
                   what="six throttled steps")  # fmt: skip

        shown = narrow(worker_env, "status", wid)
        throttled = [line.split(None, 1)[1] for line in shown if line.split()[:1] == ["throttled"]]
        assert throttled == ["6 steps wait for throttle (concurrency limit)"]

        limits = narrow(worker_env, "limits")
        [row] = [line for line in limits if line.split()[:1] == ["throttle"]]
        assert row.split()[1:6] == ["–", "–", "3", "3", "6"]
        first = limits.index("first waiting under throttle –:")
        assert all(line.startswith(f"  {wid} step_1.") for line in limits[first + 1 : first + 7])
    finally:
        open_gate(raw_redis, g, 9)
    assert orchestrator.wait(wid, timeout=60).status == "completed"
