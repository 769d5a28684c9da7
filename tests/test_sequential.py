"""Sequential workflows: a Celery chain of agent steps, state handed on through Redis."""

from __future__ import annotations

import pytest

from orchestration import TaskStatus, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import step

pytestmark = pytest.mark.workflow_suite


def test_each_step_sees_what_earlier_steps_committed(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow(
        {
            "name": "handoff",
            "steps": [
                step("echo", "first", value=1),
                step("payload", "blob", size=2048),
                step("read", "read_back", key="blob"),
                step("echo", "last", value="done"),
            ],
        }
    )
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.current_step == ctx.total_steps == 4
    assert ctx.shared_data["first"]["value"] == 1
    assert ctx.shared_data["read_back"] == {
        "key": "blob",
        "bytes": len('{"blob": ""}') + 2048,
        "saw_keys": ["blob"],  # what it declares it reads, no more
    }
    assert ctx.shared_data["last"]["saw_keys"] == ["blob", "first", "read_back"]
    assert ctx.shared_data["last"]["previous"] == ["step_1", "step_2", "step_3"]
    assert list(ctx.task_results) == ["step_1", "step_2", "step_3", "step_4"]
    assert all(r.status == TaskStatus.COMPLETED for r in ctx.task_results.values())
    assert [h.version for h in ctx.execution_history if h.event == "step_completed"] == [1, 2, 3, 4]


def test_a_failing_middle_step_fails_the_workflow_and_stops_it(
    orch: WorkflowOrchestrator, raw_redis: object
) -> None:
    wid = orch.run_workflow(
        {
            "name": "breaks",
            "steps": [
                step("echo", "a", value=1),
                step("fail", "b", message="the model refused"),
                step("echo", "c", value=3),
            ],
        }
    )
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.failed_step == "step_2"
    assert ctx.error == "ValueError: the model refused"
    assert ctx.task_results["step_2"].status == TaskStatus.FAILED
    assert "step_3" not in ctx.task_results
    assert sorted(ctx.shared_data) == ["a"]
    status = orch.get_workflow_status(wid)
    assert (status.status, status.progress, status["failed_step"]) == ("failed", "1/3", "step_2")
