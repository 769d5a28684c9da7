"""Branches: one way through, chosen at run time by a value an earlier step produced."""

from __future__ import annotations

from typing import Any

import pytest

from orchestration import DefinitionError, TaskStatus, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from orchestration.client.agents import load_catalog
from orchestration.definition import compile_plan, read_definition
from tests.helpers import step

pytestmark = pytest.mark.workflow_suite


def tiered(tier: Any) -> dict[str, Any]:
    return {
        "name": "tiers",
        "steps": [
            step("echo", "classification", value={"tier": tier}),
            {"branch": {
                "on": "classification.value.tier",
                "cases": {"high": [step("echo", "enriched", value="deep"),
                                   step("echo", "scored", value="high")],
                          "medium": [step("echo", "scored", value="medium")],
                          "3": [step("echo", "scored", value="three")]},
                "default": [step("echo", "scored", value="default")],
            }},
            step("echo", "after", value="end"),
        ],
    }  # fmt: skip


def test_the_case_the_value_names_runs_and_the_others_are_skipped(
    orch: WorkflowOrchestrator,
) -> None:
    ctx = orch.wait(orch.run_workflow(tiered("high")), timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.shared_data["scored"]["value"] == "high"
    assert ctx.shared_data["enriched"]["value"] == "deep"
    # What came after saw the way taken: its keys, and its steps' results.
    assert ctx.shared_data["after"]["saw_keys"] == ["classification", "enriched", "scored"]
    choice = ctx.task_results["step_2"].result
    assert (choice["value"], choice["taken"], choice["steps"]) == (
        "high", "high", ["step_2.1.1", "step_2.1.2"],
    )  # fmt: skip
    skipped = sorted(s for s, r in ctx.task_results.items() if r.status == TaskStatus.SKIPPED)
    assert skipped == ["step_2.2.1", "step_2.3.1", "step_2.4.1"]
    # Progress counts the steps on the way taken: 1 + 2 + 1.
    assert (ctx.current_step, ctx.total_steps) == (4, 4)
    assert orch.get_workflow_status(wid := ctx.workflow_id).progress == "4/4", wid


@pytest.mark.parametrize(
    ("tier", "scored"), [("medium", "medium"), (3, "three"), ("low", "default"), (None, "default")]
)
def test_numbers_match_their_json_and_anything_else_goes_to_the_default(
    orch: WorkflowOrchestrator, tier: Any, scored: str
) -> None:
    ctx = orch.wait(orch.run_workflow(tiered(tier)), timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.shared_data["scored"]["value"] == scored
    assert "enriched" not in ctx.shared_data
    assert (ctx.current_step, ctx.total_steps) == (3, 3)


def approval(approved: Any) -> dict[str, Any]:
    return {
        "steps": [
            step("echo", "approval", value={"approved": approved}),
            {"when": {"path": "approval.value.approved", "equals": True},
             "then": [step("echo", "sent", value="report")],
             "else": [step("echo", "held", value="draft")]},
        ]
    }  # fmt: skip


@pytest.mark.parametrize(("approved", "key"), [(True, "sent"), (False, "held"), (1, "held")])
def test_when_takes_then_only_on_an_equal_value(
    orch: WorkflowOrchestrator, approved: Any, key: str
) -> None:
    ctx = orch.wait(orch.run_workflow(approval(approved)), timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert set(ctx.shared_data) == {"approval", key}  # 1 is not true: no code, no coercion


def on_c(value: Any, cases: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """echo ``value`` as ``c``, then a branch on ``c.value`` between ``cases``."""
    return {
        "steps": [step("echo", "c", value=value), {"branch": {"on": "c.value", "cases": cases}}]
    }


def test_a_branch_with_no_way_for_the_value_runs_nothing_and_goes_on(
    orch: WorkflowOrchestrator,
) -> None:
    definition = on_c("low", {"high": [step("echo", "x")]})
    ctx = orch.wait(orch.run_workflow(definition), timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.task_results["step_2"].result["taken"] is None
    assert ctx.task_results["step_2.1.1"].status == TaskStatus.SKIPPED
    assert (ctx.current_step, ctx.total_steps) == (1, 1)


def test_a_failing_step_on_the_way_taken_fails_the_workflow_and_retry_goes_on_from_it(
    orch: WorkflowOrchestrator,
) -> None:
    definition = on_c("go", {"go": [step("echo", "one"),
                                    step("flaky", "two", failures=1, permanent=True),
                                    step("echo", "three")]})  # fmt: skip
    wid = orch.run_workflow(definition)
    failed = orch.wait(wid, timeout=60)
    assert (failed.status, failed.failed_step) == (WorkflowStatus.FAILED, "step_2.1.2")

    orch.retry_workflow(wid)
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.shared_data["two"]["attempts"] == 2
    runs = [h.step for h in ctx.execution_history if h.event == "step_completed"]
    assert runs.count("step_2.1.1") == 1 and runs.count("step_2") == 1  # not run again


def _compile(definition: dict[str, Any]) -> None:
    compile_plan(read_definition(definition), load_catalog(["tests.agents"]))


def test_a_branch_is_checked_whole_when_the_workflow_is_created() -> None:
    with pytest.raises(DefinitionError) as err:
        _compile({"steps": [step("echo", "c"), {"branch": {"on": "nope.x", "cases": {
            "a": [step("no_such_task")]}}}]})  # fmt: skip
    text = str(err.value)
    assert "steps[1].branch.on" in text and "'nope' is not produced" in text
    assert "steps[1].branch.cases.a[0].task_type" in text

    # A key made on one way only cannot be read after the branch: that way may not run.
    with pytest.raises(DefinitionError, match="reads 'deep', which no earlier step produces"):
        _compile({"steps": [step("echo", "c"), {"branch": {"on": "c.value", "cases": {
            "a": [step("echo", "deep")], "b": [step("echo", "other")]}}},
            step("read", key="deep")]})  # fmt: skip

    # Made on every way (default included) it can; ways may reuse a key, steps outside not.
    _compile({"steps": [step("echo", "c"), {"branch": {"on": "c.value", "cases": {
        "a": [step("echo", "k")]}, "default": [step("echo", "k")]}},
        step("read", key="k")]})  # fmt: skip
    with pytest.raises(DefinitionError, match="duplicate output_key 'c'"):
        _compile({"steps": [step("echo", "c"), {"when": {"path": "c.value", "equals": 1},
                                                "then": [step("echo", "c")]}]})  # fmt: skip
