"""Inputs are bounded like outputs: parameters and signal payloads over
``BATON_MAX_INPUT_BYTES`` are refused before anything is written, and every duration a
definition gives (sleeps, timeouts, retry delays) has a maximum, checked at creation."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestration import DefinitionError, WorkflowOrchestrator, WorkflowStatus
from orchestration.errors import InputTooLarge, SignalError, SignalTooLarge
from orchestration.model.bounds import MAX_DURATION
from orchestration.settings import BatonSettings

CAP = 10_000


def echo(key: str, value: Any = "x") -> dict[str, Any]:
    return {"agent_id": "testkit", "task_type": "echo", "output_key": key,
            "parameters": {"value": value}}  # fmt: skip


@pytest.fixture(scope="module")
def capped(settings: BatonSettings) -> Iterator[WorkflowOrchestrator]:
    """An orchestrator on the session's Redis that takes in at most ``CAP`` bytes."""
    small = settings.model_copy(update={"max_input_bytes": CAP})
    orch = WorkflowOrchestrator(settings.redis_url, settings=small, local_workers=False)
    yield orch
    orch.close()


def keys_of(r: redis.Redis, settings: BatonSettings, wid: str) -> list[bytes]:
    return list(r.scan_iter(f"{settings.key_prefix}:*{wid}*", count=1000))


def test_the_input_cap_defaults_to_the_output_cap() -> None:
    s = BatonSettings(_env_file=None)
    assert s.max_input_bytes == s.max_output_bytes == 64 * 2**20


def test_parameters_over_the_cap_are_refused_and_nothing_is_written(
    capped: WorkflowOrchestrator, raw_redis: redis.Redis, settings: BatonSettings
) -> None:
    big = {"name": "big", "steps": [echo("a"), {"parallel": [echo("b", "y" * CAP)]}]}
    for call in (capped.create_workflow, capped.run_workflow):
        wid = f"big-{uuid.uuid4().hex[:8]}"
        with pytest.raises(InputTooLarge, match=r"BATON_MAX_INPUT_BYTES \(10,000 bytes\)") as err:
            call(big, wid)
        assert isinstance(err.value, DefinitionError)
        assert [where for where, _ in err.value.problems] == ["parameters"]
        assert keys_of(raw_redis, settings, wid) == []
    with pytest.raises(InputTooLarge):
        capped.register_workflow(big)
    # A map's parameters count too; just under the cap is taken.
    mapped = {"steps": [echo("xs", [1]), {"map": {"over": "xs.value", "agent_id": "testkit",
              "task_type": "echo", "parameters": {"value": "z" * CAP}}}]}  # fmt: skip
    with pytest.raises(InputTooLarge):
        capped.create_workflow(mapped)
    wid = capped.create_workflow({"steps": [echo("a", "y" * (CAP - 500))]})
    assert capped.get_workflow_status(wid).status == WorkflowStatus.CREATED


def test_a_signal_over_the_cap_is_refused_and_nothing_changes(
    orch: WorkflowOrchestrator, capped: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    wid = orch.run_workflow({"steps": [echo("a"), {"wait_for": "approval", "output_key": "ok"}]})
    assert orch.wait(wid, timeout=30, until=("waiting",)).status == WorkflowStatus.WAITING
    version = orch.get_workflow_status(wid).version
    keys = orch.store.keys(wid)

    with pytest.raises(SignalTooLarge, match=r"over BATON_MAX_INPUT_BYTES \(10,000 bytes\)") as e:
        capped.signal(wid, "approval", {"note": "n" * CAP}, "sig-1")
    assert isinstance(e.value, SignalError) and "\n" not in str(e.value)
    assert not raw_redis.exists(keys.signals)  # neither kept nor its id remembered
    assert orch.get_workflow_status(wid).version == version
    assert [w.workflow_id for w in orch.waiting()].count(wid) == 1

    assert capped.signal(wid, "approval", {"note": "fine"}, "sig-1") == "applied"
    assert orch.wait(wid, timeout=30).shared_data["ok"] == {"note": "fine"}


def test_the_cli_refuses_big_parameters_and_signals_in_one_line(
    orch: WorkflowOrchestrator, worker_env: dict[str, str], raw_redis: redis.Redis,
    settings: BatonSettings, tmp_path: Path,
) -> None:  # fmt: skip
    def baton(*args: str) -> subprocess.CompletedProcess[str]:
        env = worker_env | {"BATON_MAX_INPUT_BYTES": str(CAP), "PATH": "/usr/bin:/bin"}
        return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    flow = tmp_path / "big.json"
    flow.write_text(json.dumps({"steps": [echo("a", "y" * CAP)]}))
    wid = f"cli-big-{uuid.uuid4().hex[:8]}"
    run = baton("run", str(flow), "--id", wid)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("baton: invalid workflow")
    assert "parameters:" in run.stderr and "BATON_MAX_INPUT_BYTES (10,000 bytes)" in run.stderr
    assert keys_of(raw_redis, settings, wid) == []

    waiting = orch.run_workflow({"steps": [{"wait_for": "approval"}]})
    orch.wait(waiting, timeout=30, until=("waiting",))
    sig = baton("signal", waiting, "approval", "--data", json.dumps({"note": "n" * CAP}))
    assert sig.returncode == 2, sig.stderr
    assert sig.stderr.count("\n") == 1
    assert sig.stderr.startswith("baton: signal 'approval' refused: its payload is")
    assert not raw_redis.exists(orch.store.keys(waiting).signals)
    # A file over the cap is refused by its size, before it is read (this one is no JSON).
    huge = tmp_path / "huge.json"
    huge.write_text("n" * (CAP + 1))
    sig = baton("signal", waiting, "approval", "--data", f"@{huge}")
    assert sig.returncode == 2, sig.stderr
    assert sig.stderr.count("\n") == 1 and "Traceback" not in sig.stderr
    assert sig.stderr.startswith(
        f"baton: signal 'approval' refused: {huge} is 10,001 bytes, "
        "over BATON_MAX_INPUT_BYTES (10,000 bytes) (hint: "
    )
    assert not raw_redis.exists(orch.store.keys(waiting).signals)
    orch.cancel_workflow(waiting)


IN_400_DAYS = (datetime.now(UTC) + timedelta(days=400)).isoformat()
MAP = {"over": "xs.value", "agent_id": "testkit", "task_type": "echo"}


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"sleep": 1e12}, "sleep"),
        ({"sleep": MAX_DURATION + 1}, "sleep"),
        ({"sleep": float("inf")}, "sleep"),
        ({"sleep_until": IN_400_DAYS}, "sleep_until"),
        ({"wait_for": "a", "timeout": 1e12}, "timeout"),
        ({**echo("b"), "retry_backoff": 1e12}, "retry_backoff"),
        ({**echo("b"), "retry_backoff_max": 1e12}, "retry_backoff_max"),
        ({**echo("b"), "timeout": 1e12}, "timeout"),
        ({"map": {**MAP, "retry_backoff": 1e12}}, "steps[1].map.retry_backoff"),
        ({"map": {**MAP, "retry_backoff_max": 1e12}}, "steps[1].map.retry_backoff_max"),
        ({"map": {**MAP, "timeout": 1e12}}, "steps[1].map.timeout"),
        ({"parallel": [{"sleep": 1e12}]}, "sleep"),
    ],
)
def test_a_duration_over_the_maximum_is_refused_naming_its_field(
    orchestrator: WorkflowOrchestrator, step: dict[str, Any], field: str
) -> None:
    with pytest.raises(DefinitionError, match=r"at most 366 days") as err:
        orchestrator.create_workflow({"steps": [echo("xs", [1]), step]})
    assert field in str(err.value)


def test_durations_up_to_the_maximum_are_taken(orchestrator: WorkflowOrchestrator) -> None:
    in_300_days = (datetime.now(UTC) + timedelta(days=300)).isoformat()
    wid = orchestrator.create_workflow({"steps": [
        {"sleep": MAX_DURATION}, {"sleep_until": in_300_days},
        {"wait_for": "a", "timeout": MAX_DURATION},
        {**echo("b"), "retry_backoff": MAX_DURATION, "retry_backoff_max": MAX_DURATION},
    ]})  # fmt: skip
    assert orchestrator.get_workflow_status(wid).status == WorkflowStatus.CREATED


def handoff_to_wait(**parameters: Any) -> dict[str, Any]:
    """A step handing off to the engine's wait with these parameters."""
    to = {"to_agent": "baton", "to_task": "wait", "to_parameters": parameters}
    return {"task_type": "hand", "parameters": to}


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"task_type": "ask_within", "parameters": {"timeout": 1e12}}, "timeout"),
        ({"task_type": "ask_within", "parameters": {"timeout": MAX_DURATION + 1}}, "timeout"),
        (handoff_to_wait(sleep=1e12), "sleep"),
        (handoff_to_wait(sleep_until=IN_400_DAYS), "sleep_until"),
        (handoff_to_wait(name="a", timeout=1e300), "timeout"),
    ],
)
def test_a_wait_asked_for_at_run_time_is_bounded_like_a_definitions(
    orch: WorkflowOrchestrator, step: dict[str, Any], field: str
) -> None:
    wid = orch.run_workflow({"steps": [{"agent_id": "testkit", **step}, echo("after")]})
    ctx = orch.wait(wid, timeout=60, until=("waiting",))
    assert (ctx.status, ctx.failed_step) == (WorkflowStatus.FAILED, "step_1"), ctx.error
    assert ctx.error is not None
    assert "at most 366 days (31,622,400 seconds)" in ctx.error
    assert f"(at handoff.parameters.{field})" in ctx.error
    assert list(ctx.task_results) == ["step_1"]  # no wait inserted, nothing parked
    assert wid not in [w.workflow_id for w in orch.waiting()]
