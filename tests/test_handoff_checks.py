"""Validation checkpoints: parameters and data flow at creation, outputs before commit."""

from __future__ import annotations

import pytest

from orchestration import DefinitionError, TaskStatus, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import step

pytestmark = pytest.mark.workflow_suite


def test_output_that_fails_its_model_is_never_handed_on(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow({"steps": [step("bad_output", "total"), step("echo", "after")]})
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.failed_step == "step_1"
    assert ctx.error and ctx.error.startswith(
        "AgentOutputError: testkit.bad_output returned output"
    )
    assert "does not match Strict" in ctx.error
    assert "total" not in ctx.shared_data
    assert ctx.task_results["step_1"].status == TaskStatus.FAILED
    assert "step_2" not in ctx.task_results


def test_a_step_reading_a_key_nobody_produces_is_refused_at_creation(
    orchestrator: WorkflowOrchestrator,
) -> None:
    definition = {"steps": [
        step("payload", "blob", size=10),
        step("read", "r", key="blb"),
        {"parallel": [step("read", "in_group", key="blob"),
                      step("read", "sibling", key="in_group")]},
    ]}  # fmt: skip
    with pytest.raises(DefinitionError) as err:
        orchestrator.create_workflow(definition)

    assert err.value.problems == [
        ("steps[1]", "testkit.read reads 'blb', which no earlier step produces (available: blob)"),
        ("steps[2].parallel[1]",
         "testkit.read reads 'in_group', which no earlier step produces (available: blob, r)"),
    ]  # fmt: skip


def test_built_in_agents_declare_what_they_read(orchestrator: WorkflowOrchestrator) -> None:
    with pytest.raises(DefinitionError, match="analyzer.trend_analysis reads 'cleaned_records'"):
        orchestrator.create_workflow(
            {"steps": [{"agent_id": "analyzer", "task_type": "trend_analysis"}]}
        )


def test_context_keys_limit_what_an_agent_is_handed(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow({"steps": [
        step("payload", "blob", size=100),
        step("payload", "private", size=100),
        {**step("echo", "narrow"), "context_keys": ["blob"]},
        step("echo", "wide"),
    ]})  # fmt: skip
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["narrow"]["saw_keys"] == ["blob"]
    assert ctx.shared_data["wide"]["saw_keys"] == ["blob", "narrow", "private"]


def test_a_task_that_declares_what_it_reads_loads_only_that(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow({"steps": [
        step("payload", "blob", size=100),
        step("payload", "private", size=100_000),
        step("read", "declared", key="blob"),
        {**step("read", "widened", key="blob"), "context_keys": ["blob", "private"]},
    ]})  # fmt: skip
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["declared"]["saw_keys"] == ["blob"]
    assert ctx.shared_data["widened"]["saw_keys"] == ["blob", "private"]


def test_context_keys_must_hold_what_the_task_reads(orchestrator: WorkflowOrchestrator) -> None:
    with pytest.raises(DefinitionError) as err:
        orchestrator.create_workflow({"steps": [
            step("payload", "blob", size=1), step("payload", "other", size=1),
            {**step("read", "r", key="blob"), "context_keys": ["other"]},
        ]})  # fmt: skip
    assert err.value.problems == [
        ("steps[2].context_keys", "must include 'blob', which the task reads")
    ]
