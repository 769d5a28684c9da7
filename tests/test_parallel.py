"""Parallel groups: a chord whose callback aggregates every member, failures included."""

from __future__ import annotations

import pytest

from orchestration import TaskStatus, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import step

pytestmark = pytest.mark.workflow_suite


def echo(value: object, output_key: str | None = None) -> dict[str, object]:
    return step("echo", output_key, value=value)


FAIL = {"agent_id": "testkit", "task_type": "fail", "parameters": {"message": "member down"}}


def test_a_failing_member_is_counted_and_the_workflow_goes_on(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow(
        {
            "name": "fan-out",
            "steps": [
                echo("before", "before"),
                {
                    "parallel": [
                        echo(1, "m1"),
                        FAIL,
                        echo(3),
                        [echo("b1", "seq1"), echo("b2", "seq2")],
                    ],
                    "output_key": "group",
                },
                echo("after", "after"),
            ],
        }
    )
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    summary = ctx.shared_data["group"]
    assert summary["total_tasks"] == 5
    assert summary["successful_tasks"] == 4
    assert summary["failed_tasks"] == 1
    assert summary["success_rate"] == 0.8
    assert summary["failures"] == {"step_2.2": "ValueError: member down"}
    perf = summary["agent_performance"]["testkit"]
    assert (perf["tasks_completed"], perf["tasks_failed"]) == (4, 1)
    member_times = [
        ctx.task_results[s].execution_time
        for s in ("step_2.1", "step_2.2", "step_2.3", "step_2.4.1", "step_2.4.2")
    ]
    assert abs(perf["average_time"] - sum(member_times) / 5) < 1e-9  # the true mean
    assert [r["value"] for r in perf["results"]] == [1, 3, "b1", "b2"]  # in member order
    # The sequence inside the group ran in order: its second step saw the first's output.
    assert "seq1" in ctx.shared_data["seq2"]["saw_keys"]
    assert ctx.shared_data["after"]["saw_keys"] == ["before", "group", "m1", "seq1", "seq2"]
    assert ctx.current_step == 3


def test_a_branch_stops_at_its_failed_step(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow(
        {
            "name": "branch",
            "steps": [
                {"parallel": [[FAIL, echo("never")], echo("ok")], "output_key": "g"},
            ],
        }
    )
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    skipped = ctx.task_results["step_1.1.2"]
    assert skipped.status == TaskStatus.FAILED
    assert skipped.error == "skipped: upstream step step_1.1.1 did not complete"
    assert ctx.shared_data["g"]["successful_tasks"] == 1
    assert ctx.shared_data["g"]["failed_tasks"] == 2


@pytest.mark.parametrize("pause", [False, True], ids=["straight", "paused-while-sending"])
def test_a_group_bigger_than_a_batch_runs_every_member_once(
    orch: WorkflowOrchestrator, pause: bool
) -> None:
    """Members go out a batch per script (workers start on the first ones at once); a pause
    while they are being sent holds the rest, and resume sends them."""
    members = [echo(i) for i in range(250)]
    wid = orch.run_workflow(
        {"name": "wide", "steps": [echo("a", "a"), {"parallel": members, "output_key": "g"}]}
    )
    if pause:
        orch.pause_workflow(wid)
        orch.resume_workflow(wid)
    ctx = orch.wait(wid, timeout=120)

    assert ctx.status == WorkflowStatus.COMPLETED
    summary = ctx.shared_data["g"]
    assert (summary["total_tasks"], summary["successful_tasks"]) == (250, 250)
    members_done = [h.step for h in ctx.execution_history if h.event == "step_completed"]
    assert sorted(members_done) == sorted({*members_done})  # each committed once
    assert len([s for s in members_done if s.startswith("step_2.")]) == 250
    assert orch.store.outstanding(wid) == set()
