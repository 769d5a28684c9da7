"""Failure handling: compensations in reverse order, state restored, groups with policies."""

from __future__ import annotations

import pytest
import redis

from orchestration import TaskStatus, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import step

pytestmark = pytest.mark.workflow_suite


def ledger(r: redis.Redis, workflow_id: str) -> list[str]:
    return [x.decode() for x in r.lrange(f"testlog:ledger:{workflow_id}", 0, -1)]


def test_failure_at_step_4_of_5_compensates_in_reverse_and_restores_state(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    wid = orch.run_workflow({"steps": [
        step("reserve", "seat", item="seat"),
        step("reserve", "hotel", item="hotel"),
        step("echo", "note", value="no compensation"),
        step("fail", "pay", message="card declined"),
        step("echo", "confirm"),
    ]})  # fmt: skip
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.FAILED
    assert (ctx.failed_step, ctx.error) == ("step_4", "ValueError: card declined")
    assert ledger(raw_redis, wid) == [
        "reserve:seat",
        "reserve:hotel",
        "release:hotel",
        "release:seat",
    ]
    assert ctx.compensation is not None
    assert ctx.compensation.compensated == ["step_2", "step_1"]
    assert ctx.compensation.failures == {}
    # Restored to the checkpoint before the first compensated step: nothing it did remains.
    assert ctx.compensation.restored_to_version == 0
    assert ctx.shared_data == {}
    assert list(ctx.task_results) == ["step_4"]  # the failure itself stays visible
    assert ctx.task_results["step_4"].error == "ValueError: card declined"
    assert "step_5" not in ctx.task_results
    events = [h.event for h in ctx.execution_history]
    assert events[-5:] == ["step_failed", "compensation_started", "step_compensated",
                           "step_compensated", "state_restored"]  # fmt: skip
    status = orch.get_workflow_status(wid)
    assert status.compensation == ctx.compensation
    assert orch.get_context(wid, version=3).shared_data.keys() == {"seat", "hotel", "note"}


def test_a_failing_compensation_is_recorded_and_the_others_still_run(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    wid = orch.run_workflow({"steps": [
        step("reserve", "a", item="a"),
        step("reserve", "b", item="stuck-b"),
        step("fail", "x"),
    ]})  # fmt: skip
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.FAILED
    assert ledger(raw_redis, wid) == ["reserve:a", "reserve:stuck-b", "release:a"]
    assert ctx.compensation is not None
    assert ctx.compensation.compensated == ["step_1"]
    assert ctx.compensation.failures == {"step_2": "RuntimeError: stuck-b cannot be released"}
    failed = [h for h in ctx.execution_history if h.event == "compensation_failed"]
    assert [(h.step, h.error) for h in failed] == [
        ("step_2", "RuntimeError: stuck-b cannot be released")
    ]


def test_group_below_its_success_threshold_fails_and_its_outputs_are_rolled_back(
    orch: WorkflowOrchestrator,
) -> None:
    wid = orch.run_workflow({"steps": [
        step("echo", "before", value=0),
        {"parallel": [step("echo", "m1", value=1), step("echo", "m2", value=2), step("fail"),
                      step("fail")], "output_key": "group", "min_success_rate": 0.75},
        step("echo", "after"),
    ]})  # fmt: skip
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.failed_step == "step_2"
    assert ctx.error == "group step_2: success rate 0.50 is below min_success_rate 0.75"
    aggregate = ctx.task_results["step_2"]
    assert aggregate.status == TaskStatus.FAILED
    assert (aggregate.result["successful_tasks"], aggregate.result["failed_tasks"]) == (2, 2)
    assert sorted(ctx.shared_data) == ["before"]  # m1, m2 and the summary are rolled back
    assert "step_3" not in ctx.task_results


def test_group_above_its_threshold_goes_on_with_failures_counted(
    orch: WorkflowOrchestrator,
) -> None:
    wid = orch.run_workflow({"steps": [
        {"parallel": [step("echo", value=1), step("echo", value=2), step("echo", value=3),
                      step("fail")], "output_key": "group", "min_success_rate": 0.75},
        step("echo", "after"),
    ]})  # fmt: skip
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["group"]["success_rate"] == 0.75
    assert ctx.shared_data["group"]["failed_tasks"] == 1
    assert "group" in ctx.shared_data["after"]["saw_keys"]


def test_group_with_on_failure_fail_fails_on_one_member(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow({"steps": [
        {"parallel": [step("echo", value=1), step("fail", message="one bad")],
         "on_failure": "fail"},
    ]})  # fmt: skip
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.error == "group step_1: 1 of 2 members failed (on_failure: fail)"


def test_a_successful_retry_leaves_no_compensation_on_the_workflow(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    # Given: a failure whose saga released the seat...
    wid = orch.run_workflow({"steps": [
        step("reserve", "seat", item="seat"), step("flaky", "paid", failures=1),
    ]})  # fmt: skip
    failed = orch.wait(wid, timeout=60)
    assert failed.status == WorkflowStatus.FAILED and failed.compensation is not None

    # When: the retry goes through...
    orch.retry_workflow(wid)
    done = orch.wait(wid, timeout=60)

    # Then: the workflow is completed, with no compensation banner; the history keeps it.
    assert done.status == WorkflowStatus.COMPLETED
    assert done.compensation is None
    assert orch.get_workflow_status(wid).compensation is None
    assert ledger(raw_redis, wid) == ["reserve:seat", "release:seat", "reserve:seat"]
    assert "step_compensated" in [h.event for h in done.execution_history]
