"""Streamed output: what a running step emits reaches any process, in order, and a reader
that reconnects with the last id it saw misses nothing."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from typing import Any

import redis

from orchestration import StreamEvent, WorkflowOrchestrator, WorkflowStatus
from orchestration.client.embedded import LocalWorkers
from orchestration.model.names import STREAM_MAXLEN
from orchestration.state.keys import WorkflowKeys
from tests.helpers import open_gate, wait_gate_started
from workers.dashboard.views import DashboardReader


def emitting(name: str, emits: int) -> dict[str, Any]:
    return {"name": "streams", "steps": [
        {"agent_id": "aio", "task_type": "await_gate", "output_key": "out",
         "parameters": {"name": name, "emits": emits}}]}  # fmt: skip


def shape(events: list[StreamEvent]) -> list[tuple[str, str | None, Any]]:
    return [(e.event, e.step, e.data) for e in events]


def test_a_running_steps_emits_reach_another_process_in_order(
    orchestrator: WorkflowOrchestrator, aio_worker: LocalWorkers, raw_redis: redis.Redis
) -> None:
    g = f"stream-{uuid.uuid4().hex[:6]}"
    wid = orchestrator.run_workflow(emitting(g, 3))
    got: list[StreamEvent] = []
    reader = threading.Thread(target=lambda: got.extend(orchestrator.stream(wid, timeout=30)))
    reader.start()
    wait_gate_started(raw_redis, g)
    open_gate(raw_redis, g)
    reader.join(30)

    assert not reader.is_alive()  # the stream ended with the workflow
    progress = [{"done": i, "total": 3, "message": f"token {i}"} for i in (1, 2, 3)]
    assert shape(got) == [
        ("status", None, None),  # running
        ("step_started", "step_1", None),
        ("emitted", "step_1", {"token": "t0"}),
        ("progress", "step_1", progress[0]),
        ("emitted", "step_1", {"token": "t1"}),
        ("progress", "step_1", progress[1]),
        ("emitted", "step_1", {"token": "t2"}),
        ("progress", "step_1", progress[2]),
        ("committed", "step_1", None),
    ]
    assert got[0].status == "running"
    assert got[-1].result == "completed" and got[-1].status == "completed" and got[-1].ends
    ids = [e.id for e in got]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))

    # A reader that reconnects after the third event gets exactly the rest.
    again = list(orchestrator.stream(wid, since=got[2].id))
    assert [e.id for e in again] == ids[3:]
    # The stream expires with the workflow.
    assert raw_redis.ttl(WorkflowKeys(orchestrator.store.prefix, wid).stream) > 0


def test_baton_watch_prints_the_events_live_and_exits_with_the_outcome(
    orchestrator: WorkflowOrchestrator,
    aio_worker: LocalWorkers,
    raw_redis: redis.Redis,
    worker_env: dict[str, str],
) -> None:
    g = f"watch-{uuid.uuid4().hex[:6]}"
    wid = orchestrator.run_workflow(emitting(g, 2))
    watch = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "watch", wid[:8]],
        env=worker_env | {"PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None
    first = watch.stdout.readline()  # printed while the step still waits at its gate
    assert first.split(" ", 1)[1] == "workflow running\n"
    wait_gate_started(raw_redis, g)
    open_gate(raw_redis, g)
    # (read on from the same buffered file: communicate() would read the descriptor and
    # miss a line already buffered with the first one)
    out = watch.stdout.read()
    watch.wait(timeout=30)
    err = watch.stderr.read() if watch.stderr else ""
    lines = [line.split(" ", 1)[1] for line in out.splitlines()]
    assert lines == [
        "step_1 step started",
        'step_1 {"token":"t0"}',
        "step_1 progress 1/2 token 1",
        'step_1 {"token":"t1"}',
        "step_1 progress 2/2 token 2",
        "step_1 completed (version 1); workflow completed",
    ]
    assert watch.returncode == 0 and err == ""


def test_an_emit_over_the_cap_fails_its_step_unless_caught(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    big = 17 * 1024
    caught = orch.run_workflow({"name": "big emit, caught", "steps": [
        {"agent_id": "testkit", "task_type": "emit_many", "output_key": "o",
         "parameters": {"count": 2, "size": big, "catch": True}}]})  # fmt: skip
    failed = orch.run_workflow({"name": "big emit", "steps": [
        {"agent_id": "testkit", "task_type": "emit_many", "retries": 3,
         "parameters": {"count": 1, "size": big}}]})  # fmt: skip

    ok = orch.wait(caught, timeout=30)
    assert ok.status == WorkflowStatus.COMPLETED
    assert ok.shared_data["o"] == {"emitted": 0, "refused": 2}
    bad = orch.wait(failed, timeout=30)
    assert bad.status == WorkflowStatus.FAILED
    error = bad.task_results["step_1"].error or ""
    assert "over the cap of 16,384" in error and "not retried" in error
    # Nothing over the cap reached the stream; the progress did.
    events = orch.store.events(caught)
    assert not [e for e in events if e.event == "emitted"]
    assert [e.data["done"] for e in events if e.event == "progress"] == [1, 2]


def test_the_stream_is_bounded(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow({"name": "chatty", "steps": [
        {"agent_id": "testkit", "task_type": "emit_many",
         "parameters": {"count": STREAM_MAXLEN, "size": 8}}]})  # fmt: skip
    assert orch.wait(wid, timeout=60).status == WorkflowStatus.COMPLETED
    kept = orch.store.redis.xlen(WorkflowKeys(orch.store.prefix, wid).stream)
    assert STREAM_MAXLEN <= kept < STREAM_MAXLEN + 1000  # ~trimmed, by whole nodes
    assert list(orch.stream(wid))[-1].ends  # the end is kept: it is the newest


def test_the_dashboard_sees_a_running_steps_latest_output_and_progress(
    orchestrator: WorkflowOrchestrator, aio_worker: LocalWorkers, raw_redis: redis.Redis
) -> None:
    g = f"live-{uuid.uuid4().hex[:6]}"
    wid = orchestrator.run_workflow(emitting(g, 4))
    wait_gate_started(raw_redis, g)
    live = orchestrator.store.live(wid)
    assert live == {
        "step_1": {
            "emitted": {"token": "t3"},
            "progress": {"done": 4, "total": 4, "message": "token 4"},
        }
    }
    # ...and the dashboard's document of the workflow carries it on the running step.
    doc = DashboardReader(orchestrator.store).workflow(wid)
    [node] = doc["nodes"]
    assert node["step"]["status"] == "running" and node["step"]["live"] == live["step_1"]
    open_gate(raw_redis, g)
    assert orchestrator.wait(wid, timeout=30).status == WorkflowStatus.COMPLETED
