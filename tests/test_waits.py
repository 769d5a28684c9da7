"""People and time in the loop: wait_for steps that hold a workflow until a signal, durable
timers, on real workers. A waiting workflow holds no worker, no message and no lease."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestration import DefinitionError, WorkflowOrchestrator, WorkflowStatus
from orchestration.errors import SignalError
from tests.helpers import eventually, gated, open_gate, wait_gate_started

APPROVAL = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "note": {"type": "string"}},
    "required": ["approved"],
    "additionalProperties": False,
}


def echo(key: str, value: Any = "x") -> dict[str, Any]:
    return {"agent_id": "testkit", "task_type": "echo", "output_key": key,
            "parameters": {"value": value}}  # fmt: skip


def approval_flow(**wait: Any) -> dict[str, Any]:
    return {"name": "needs approval", "steps": [
        echo("draft", "report v1"),
        {"wait_for": "approval", "output_key": "approval", "schema": APPROVAL, **wait},
        echo("published", "done")]}  # fmt: skip


def test_a_workflow_waits_for_an_approval_holding_nothing_then_goes_on(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    wid = orch.run_workflow(approval_flow())
    ctx = orch.wait(wid, timeout=30, until=("waiting",))
    assert ctx.status == WorkflowStatus.WAITING
    status = orch.get_workflow_status(wid)
    assert status.running_steps == [] and status.progress == "1/3"
    assert not orch.store.outstanding(wid)  # no message anywhere
    [w] = [w for w in orch.waiting() if w.workflow_id == wid]
    assert (w.step_id, w.name, w.until) == ("step_2", "approval", None)

    # A payload that does not fit is refused, naming the field; nothing changes.
    version = status.version
    with pytest.raises(SignalError, match="approved: 'yes' is not of type 'boolean'"):
        orch.signal(wid, "approval", {"approved": "yes"})
    with pytest.raises(SignalError, match="never waits for 'approve'"):
        orch.signal(wid, "approve", {"approved": True})
    assert orch.get_workflow_status(wid).version == version

    assert orch.signal(wid, "approval", {"approved": True}, "sig-1", by="ana") == "applied"
    assert orch.signal(wid, "approval", {"approved": True}, "sig-1", by="ana") == "duplicate"
    ctx = orch.wait(wid, timeout=30)
    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["approval"] == {"approved": True}
    assert ctx.shared_data["published"]["value"] == "done"
    [entry] = [
        h for h in ctx.execution_history if h.step == "step_2" and h.event == "step_completed"
    ]
    assert entry.model_extra and entry.model_extra["by"] == "ana"
    assert ctx.task_results["step_2"].metadata["signal"] == "approval"


def test_a_signal_that_comes_first_is_kept_for_its_wait(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    g = f"early-{uuid.uuid4().hex[:6]}"
    flow = gated(g)
    flow["steps"].insert(2, {"wait_for": "go", "output_key": "go"})
    wid = orch.run_workflow(flow)
    wait_gate_started(raw_redis, g)
    assert orch.signal(wid, "go", {"n": 1}) == "kept"
    with pytest.raises(SignalError, match="kept already"):
        orch.signal(wid, "go", {"n": 2})
    open_gate(raw_redis, g)
    ctx = orch.wait(wid, timeout=30)
    assert ctx.status == WorkflowStatus.COMPLETED and ctx.shared_data["go"] == {"n": 1}


def test_waits_inside_a_parallel_group_are_signalled_in_any_order_at_once(
    orch: WorkflowOrchestrator,
) -> None:
    names = [f"review_{i}" for i in range(6)]
    wid = orch.run_workflow({"name": "reviews", "steps": [
        {"parallel": [echo("facts", 1), *({"wait_for": n, "output_key": n} for n in names)],
         "output_key": "reviews"},
        echo("after", 2)]})  # fmt: skip
    assert orch.wait(wid, timeout=30, until=("waiting",)).status == WorkflowStatus.WAITING
    outcomes: list[str] = []
    threads = [
        threading.Thread(target=lambda n=n: outcomes.append(orch.signal(wid, n, {"ok": n})))
        for n in reversed(names)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx = orch.wait(wid, timeout=30)

    assert outcomes == ["applied"] * 6
    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["reviews"]["successful_tasks"] == 7
    assert [ctx.shared_data[n] for n in names] == [{"ok": n} for n in names]
    aggregates = [
        h for h in ctx.execution_history if h.step == "step_1" and h.event == "step_completed"
    ]
    assert len(aggregates) == 1  # the group's aggregate ran once


def test_a_sleep_is_a_durable_timer(orch: WorkflowOrchestrator) -> None:
    t0 = time.time()
    wid = orch.run_workflow({"name": "nap", "steps": [
        echo("a"), {"sleep": 1.5, "output_key": "nap"}, echo("b")]})  # fmt: skip
    assert orch.wait(wid, timeout=30, until=("waiting",)).status == WorkflowStatus.WAITING
    ctx = orch.wait(wid, timeout=30)
    assert ctx.status == WorkflowStatus.COMPLETED
    woke = ctx.shared_data["nap"]["woke_at"]
    assert time.time() - t0 >= 1.5 and woke


def test_a_wait_that_times_out_fails_or_goes_on_with_its_default(
    orch: WorkflowOrchestrator,
) -> None:
    failing = orch.run_workflow(approval_flow(timeout=1))
    defaulted = orch.run_workflow(
        approval_flow(timeout=1, on_timeout={"default": {"approved": False}})
    )
    bad = orch.wait(failing, timeout=30)
    assert bad.status == WorkflowStatus.FAILED
    assert "wait_for 'approval' timed out after 1s" in (bad.task_results["step_2"].error or "")
    good = orch.wait(defaulted, timeout=30)
    assert good.status == WorkflowStatus.COMPLETED
    assert good.shared_data["approval"] == {"approved": False}


def test_pause_cancel_and_rollback_work_on_a_waiting_workflow(
    orch: WorkflowOrchestrator,
) -> None:
    wid = orch.run_workflow(approval_flow())
    orch.wait(wid, timeout=30, until=("waiting",))
    orch.pause_workflow(wid)
    assert orch.get_workflow_status(wid).status == WorkflowStatus.PAUSED
    orch.resume_workflow(wid)
    assert orch.wait(wid, timeout=30, until=("waiting",)).status == WorkflowStatus.WAITING
    assert orch.signal(wid, "approval", {"approved": True}) == "applied"
    assert orch.wait(wid, timeout=30).status == WorkflowStatus.COMPLETED
    # Back to before the approval: it waits for one again.
    orch.rollback(wid, 1)
    orch.resume_workflow(wid)
    assert orch.wait(wid, timeout=30, until=("waiting",)).status == WorkflowStatus.WAITING
    orch.cancel_workflow(wid)
    assert orch.get_workflow_status(wid).status == WorkflowStatus.CANCELLED
    assert not [w for w in orch.waiting() if w.workflow_id == wid]


def test_a_wait_is_checked_at_creation(orch: WorkflowOrchestrator) -> None:
    with pytest.raises(DefinitionError, match="schema is not a valid JSON Schema"):
        orch.create_workflow({"steps": [{"wait_for": "a", "schema": {"type": "nonsense"}}]})
    with pytest.raises(DefinitionError, match="wait_for 'a' twice"):
        orch.create_workflow({"steps": [{"wait_for": "a"}, {"wait_for": "a"}]})
    with pytest.raises(DefinitionError, match="give one of sleep"):
        orch.create_workflow({"steps": [{"sleep": 1, "sleep_until": "2027-01-01T00:00:00Z"}]})
    with pytest.raises(DefinitionError, match="bogus: Extra inputs"):
        orch.create_workflow({"steps": [{"wait_for": "a", "bogus": 1}]})


def test_the_cli_signals_and_lists_what_waits(
    orch: WorkflowOrchestrator, worker_env: dict[str, str], tmp_path: Path
) -> None:
    wid = orch.run_workflow(approval_flow())
    orch.wait(wid, timeout=30, until=("waiting",))

    def baton(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "workers.cli", *args],
                              env=worker_env | {"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    listed = baton("waiting")
    assert wid in listed.stdout and "signal approval" in listed.stdout
    bad = baton("signal", wid[:8], "approval", "--data", '{"approved": 1}')
    assert bad.returncode == 2
    assert bad.stderr.startswith("baton: signal 'approval' refused: approved: 1 is not of type")
    payload = tmp_path / "ok.json"
    payload.write_text('{"approved": true, "note": "fine"}')
    ok = baton("signal", wid[:8], "approval", "--data", f"@{payload}", "--by", "cli")
    assert (ok.returncode, ok.stdout) == (0, f"{wid}: signal approval applied\n")
    ctx = orch.wait(wid, timeout=30)
    assert ctx.shared_data["approval"] == {"approved": True, "note": "fine"}
    eventually(lambda: wid not in baton("waiting").stdout, what="the wait to be gone")


def test_an_agent_can_decide_to_wait_at_run_time(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow({"name": "ask", "steps": [
        {"agent_id": "testkit", "task_type": "ask", "output_key": "draft",
         "parameters": {"value": "tier: high"}},
        echo("after")]})  # fmt: skip
    assert orch.wait(wid, timeout=30, until=("waiting",)).status == WorkflowStatus.WAITING
    with pytest.raises(SignalError, match="label: 'label' is a required property|'label' is a"):
        orch.signal(wid, "correction", {})
    assert orch.signal(wid, "correction", {"label": "medium"}) == "applied"
    ctx = orch.wait(wid, timeout=30)
    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["draft"] == {"draft": "tier: high"}
    assert ctx.shared_data["correction"] == {"label": "medium"}
    assert "step_1.h1" in ctx.task_results  # the inserted wait


def test_the_approval_example_runs_with_a_reviewer_and_an_analyst(
    orch: WorkflowOrchestrator, worker_env: dict[str, str]
) -> None:
    wid = orch.run_workflow(Path(__file__).parents[1] / "examples" / "approval_pipeline.yaml")
    eventually(
        lambda: [w.name for w in orch.waiting() if w.workflow_id == wid] == ["tier_review"],
        60,
        "the tier review to wait",
    )
    assert orch.signal(wid, "tier_review", {"accepted": True, "note": "ok"}, by="rev") == "applied"
    ctx = orch.wait(wid, timeout=60, until=("waiting",))
    assert ctx.status == WorkflowStatus.WAITING and "trend_results" in ctx.shared_data
    with pytest.raises(SignalError, match="approved: False was expected|approved"):
        orch.signal(wid, "approval", {"approved": False, "analyst": "ana"})
    assert orch.signal(wid, "approval", {"approved": True, "analyst": "ana"}) == "applied"
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED
    report = Path(ctx.shared_data["final_report"]["report_path"]).read_text()
    assert "approval" in report and "ana" in report and "tier_review" in report


def test_a_stored_time_beyond_the_calendar_lists_as_the_far_future(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis, worker_env: dict[str, str]
) -> None:
    # An older version stored what ``sleep: 1e12`` gave: a due time no datetime holds.
    from workers.dashboard.views import DashboardReader

    wid = orch.run_workflow({"steps": [{"sleep": 3600}]})
    orch.wait(wid, timeout=30, until=("waiting",))
    waits_key = orch.store.keys(wid).waits
    parked = json.loads(raw_redis.hget(waits_key, "step_1"))
    env = worker_env | {"PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    for stored in ("1.0000017649e+15", "1e400", "-1e400", '"soon"'):
        raw = json.dumps({**parked, "due_ms": 0}).replace('"due_ms": 0', f'"due_ms": {stored}')
        raw_redis.hset(waits_key, "step_1", raw)

        [w] = [w for w in orch.waiting() if w.workflow_id == wid]
        far = stored in ("1.0000017649e+15", "1e400")
        assert w.until == ("9999-12-31T23:59:59+00:00" if far else None), stored
        listed = subprocess.run([sys.executable, "-m", "workers.cli", "waiting"], env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert wid in listed.stdout and ("9999-12-31" in listed.stdout) == far
        [node] = DashboardReader(orch.store).workflow(wid)["nodes"]
        assert node["step"]["wait"]["until"] == (253402300799 if far else None)
    orch.cancel_workflow(wid)
