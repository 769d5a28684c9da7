"""Dynamic handoffs: an agent passes the work on at run time; loops are stopped."""

from __future__ import annotations

import pytest

from orchestration import WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import step

pytestmark = pytest.mark.workflow_suite


def test_a_handoff_inserts_the_next_step_at_run_time(orch: WorkflowOrchestrator) -> None:
    hand = step(
        "hand", "routed", to_task="echo", to_parameters={"value": 5}, to_output_key="handed"
    )
    wid = orch.run_workflow({"steps": [hand, step("echo", "last")]})
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert list(ctx.task_results) == ["step_1", "step_1.h1", "step_2"]
    inserted = ctx.task_results["step_1.h1"]
    assert (inserted.agent_id, inserted.task_type) == ("testkit", "echo")
    assert ctx.shared_data["routed"] == {"handed_to": "testkit.echo"}
    assert ctx.shared_data["handed"]["value"] == 5
    assert ctx.shared_data["handed"]["saw_keys"] == ["routed"]  # it ran with the current state
    assert ctx.shared_data["last"]["previous"] == ["step_1", "step_1.h1"]
    assert (ctx.current_step, ctx.total_steps) == (3, 3)


def test_handoffs_can_chain(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow({"steps": [step("hand", "h", hops=2, to_output_key="end")]})
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert list(ctx.task_results) == ["step_1", "step_1.h1", "step_1.h2", "step_1.h3"]
    assert ctx.task_results["step_1.h3"].task_type == "echo"


def test_a_handoff_loop_is_stopped_by_max_handoffs(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow({"max_handoffs": 3, "steps": [step("hand", "h", hops=1000)]})
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.failed_step == "step_1.h3"
    assert ctx.error == "max_handoffs (3) reached: handoff from step_1.h3 refused; is it a loop?"
    assert len(ctx.task_results) == 4


def test_an_invalid_handoff_fails_its_step_with_the_reason(orch: WorkflowOrchestrator) -> None:
    bad = step("hand", "h", to_agent="nobody", to_task="x")
    ctx = orch.wait(orch.run_workflow({"steps": [bad]}), timeout=60)

    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.error is not None and ctx.error.startswith("unknown agent 'nobody'")
