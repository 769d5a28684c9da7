"""Per-step retries with backoff for transient errors, none for deterministic ones, and
timeouts an agent can catch."""

from __future__ import annotations

import pytest
import redis

from orchestration import WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import step

pytestmark = pytest.mark.workflow_suite


def test_a_flaky_step_is_retried_with_backoff_until_it_succeeds(orch: WorkflowOrchestrator) -> None:
    flaky = {**step("flaky", "out", failures=2), "retries": 3, "retry_backoff": 0.2}
    wid = orch.run_workflow({"steps": [step("echo", "a"), flaky, step("echo", "after")]})
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["out"] == {"attempts": 3}
    retries = [h for h in ctx.execution_history if h.event == "step_retry"]
    assert [(h.step, h.attempt, h.error) for h in retries] == [
        ("step_2", 1, "ConnectionError: upstream unavailable (attempt 1)"),
        ("step_2", 2, "ConnectionError: upstream unavailable (attempt 2)"),
    ]
    assert ctx.task_results["step_2"].metadata["attempt"] == 3
    committed = [
        h for h in ctx.execution_history if h.event == "step_completed" and h.step == "step_2"
    ]
    assert len(committed) == 1 and committed[0].attempt == 3


def test_retries_run_out_and_the_step_fails_with_every_attempt_recorded(
    orch: WorkflowOrchestrator,
) -> None:
    flaky = {**step("flaky", "out", failures=5), "retries": 2, "retry_backoff": 0.1}
    ctx = orch.wait(orch.run_workflow({"steps": [flaky]}), timeout=60)

    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.error == "ConnectionError: upstream unavailable (attempt 3)"
    attempts = [h.attempt for h in ctx.execution_history if h.step == "step_1" and h.error]
    assert attempts == [1, 2, 3]


def test_a_failure_the_agent_calls_permanent_fails_its_step_at_once(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    permanent = {**step("flaky", "out", failures=5, permanent=True), "retries": 3}
    wid = orch.run_workflow({"steps": [permanent]})
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.error == (
        "StepError: record 1 is malformed (not retried: it would fail the same way again)"
    )
    assert [h for h in ctx.execution_history if h.event == "step_retry"] == []
    assert int(raw_redis.get(f"testlog:flaky:{wid}:step_1") or 0) == 1  # one attempt only


def test_output_that_fails_its_model_is_not_retried(orch: WorkflowOrchestrator) -> None:
    ctx = orch.wait(
        orch.run_workflow({"steps": [{**step("bad_output", "total"), "retries": 2}]}), timeout=60
    )

    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.error is not None
    assert ctx.error.startswith("AgentOutputError: testkit.bad_output returned output")
    assert ctx.error.endswith("(not retried: it would fail the same way again)")
    assert [h for h in ctx.execution_history if h.event == "step_retry"] == []
    assert ctx.task_results["step_1"].metadata["attempt"] == 1


def test_a_step_over_its_timeout_fails_with_a_timeout(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    slow = {**step("gate", "out", name="never-opened", wait=60), "timeout": 1}
    ctx = orch.wait(orch.run_workflow({"steps": [slow]}), timeout=60)

    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.error == "TimeoutError: step exceeded its timeout of 1.0s"
    assert raw_redis.llen("testlog:gate:never-opened:passed") == 0  # interrupted, not finished
