"""Versioned state: every handoff is a checkpoint that can be read and restored."""

from __future__ import annotations

import pytest

from orchestration import WorkflowStateError, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import step

pytestmark = pytest.mark.workflow_suite


def test_every_committed_handoff_is_a_readable_checkpoint(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow({"steps": [step("echo", "a", value=1), step("echo", "b", value=2),
                                       step("echo", "c", value=3)]})  # fmt: skip
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED

    points = orch.get_checkpoints(wid)
    assert [(p.version, p.step, p.agent_id, p.task_type) for p in points] == [
        (0, None, None, None), (1, "step_1", "testkit", "echo"), (2, "step_2", "testkit", "echo"),
        (3, "step_3", "testkit", "echo"),
    ]  # fmt: skip
    assert points[2].changed == ["result:step_2", "data:b"]
    assert all(p.timestamp for p in points)

    at_2 = orch.get_context(wid, version=2)
    assert (at_2.version, sorted(at_2.shared_data), list(at_2.task_results)) == (
        2, ["a", "b"], ["step_1", "step_2"])  # fmt: skip
    assert at_2.current_step == 2
    assert orch.get_context(wid, version=0).shared_data == {}
    with pytest.raises(WorkflowStateError):
        orch.get_context(wid, version=99)


def test_rollback_restores_a_checkpoint_and_resume_goes_on_from_it(
    orch: WorkflowOrchestrator,
) -> None:
    wid = orch.run_workflow({"steps": [step("echo", "a", value=1), step("echo", "b", value=2),
                                       step("echo", "c", value=3)]})  # fmt: skip
    orch.wait(wid, timeout=60)

    orch.rollback(wid, to_version=1)

    ctx = orch.get_context(wid)
    assert ctx.status == WorkflowStatus.PAUSED
    assert (sorted(ctx.shared_data), list(ctx.task_results), ctx.current_step) == (
        ["a"],
        ["step_1"],
        1,
    )
    assert ctx.version == 4  # versions only grow: the restore is version 4
    assert ctx.execution_history[-1].event == "rolled_back"
    assert ctx.execution_history[-1].restored_to == 1
    assert orch.get_checkpoints(wid)[-1].restored_to == 1  # the checkpoint says which
    assert sorted(orch.get_context(wid, version=3).shared_data) == ["a", "b", "c"]  # still readable

    orch.resume_workflow(wid)
    done = orch.wait(wid, timeout=60)
    assert done.status == WorkflowStatus.COMPLETED
    assert sorted(done.shared_data) == ["a", "b", "c"]
    assert [p.step for p in orch.get_checkpoints(wid)][-2:] == ["step_2", "step_3"]
    assert done.version == 6


@pytest.mark.parametrize("version", [4, 99, -1, -5])
def test_rollback_only_to_a_checkpoint_that_exists(
    orch: WorkflowOrchestrator, version: int
) -> None:
    wid = orch.run_workflow({"steps": [step("echo", "a", value=1), step("echo", "b", value=2)]})
    before = orch.wait(wid, timeout=60)  # versions 0..2 (created, two commits)

    with pytest.raises(WorkflowStateError, match=f"has checkpoints 0..2, not {version}$"):
        orch.rollback(wid, version)

    after = orch.get_context(wid)
    assert (after.status, after.version, after.shared_data) == (
        WorkflowStatus.COMPLETED, 2, before.shared_data,
    )  # fmt: skip
    assert after.execution_history == before.execution_history


def test_rollback_refuses_a_running_workflow(orch: WorkflowOrchestrator) -> None:
    wid = orch.create_workflow({"steps": [step("echo")]})
    with pytest.raises(WorkflowStateError, match="is created, not failed or paused or completed"):
        orch.rollback(wid, 0)
