"""Maps: one task per item of a list that an earlier step produced, however long."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from orchestration import DefinitionError, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import step

pytestmark = pytest.mark.workflow_suite


def source(items: list[Any]) -> dict[str, Any]:
    """A step whose output holds ``items`` under ``value`` (over: ``src.value``)."""
    return step("echo", "src", value=items)


def mapping(**options: Any) -> dict[str, Any]:
    tag = options.pop("tag", "")
    return {
        "map": {"over": "src.value", "agent_id": "testkit", "task_type": "square",
                "parameters": {"tag": tag} if tag else {}},
        "output_key": "squares",
        **options,
    }  # fmt: skip


def test_a_map_collects_every_items_output_in_input_order(orch: WorkflowOrchestrator) -> None:
    items = [{"value": i} for i in range(25)]
    wid = orch.run_workflow(
        {"name": "squares", "steps": [source(items), mapping(batch_size=4, max_concurrency=3),
                                       step("echo", "after", value="done")]}
    )  # fmt: skip
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.shared_data["squares"] == [{"index": i, "square": i * i} for i in range(25)]
    assert "squares" in ctx.shared_data["after"]["saw_keys"]
    assert ctx.task_results["step_2"].metadata["items"] == 25
    report = orch.get_workflow_status(wid)
    assert [(m.step, m.done, m.failed, m.total) for m in report.maps] == [("step_2", 25, 0, 25)]


def test_an_empty_list_is_a_map_aggregated_at_once(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow({"steps": [source([]), mapping()]})
    ctx = orch.wait(wid, timeout=30)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.shared_data["squares"] == []


def test_over_must_lead_to_a_list_when_the_map_starts(orch: WorkflowOrchestrator) -> None:
    wid = orch.run_workflow({"steps": [source({"a": 1}), mapping()]})
    ctx = orch.wait(wid, timeout=30)
    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.failed_step == "step_2"
    assert ctx.error == "map step_2: over src.value is an object (keys: a), not a list"


def test_failed_items_fail_only_themselves_and_count_against_the_map(
    orch: WorkflowOrchestrator,
) -> None:
    items = [{"value": i, "fail": i % 5 == 0} for i in range(20)]
    wid = orch.run_workflow({"steps": [source(items), mapping(aggregate="summary", batch_size=3)]})
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    summary = ctx.shared_data["squares"]
    assert (summary["total_tasks"], summary["failed_tasks"]) == (20, 4)
    assert summary["failures"] == {
        f"step_2[{i}]": f"ValueError: item {i} refused" for i in (0, 5, 10, 15)
    }

    strict = orch.run_workflow(
        {"steps": [source(items), mapping(batch_size=3, min_success_rate=0.9)]}
    )
    failed = orch.wait(strict, timeout=60)
    assert failed.status == WorkflowStatus.FAILED
    assert failed.error == "map step_2: success rate 0.80 is below min_success_rate 0.9"


def test_max_concurrency_caps_the_items_in_flight(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    items = [{"value": i} for i in range(30)]
    tag = uuid.uuid4().hex[:8]
    wid = orch.run_workflow({"steps": [source(items), mapping(max_concurrency=2, tag=tag)]})
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert int(raw_redis.get(f"testlog:map:{tag}:max")) <= 2
    runs = raw_redis.hgetall(f"testlog:map:{tag}:runs")
    assert sorted(int(k) for k in runs) == list(range(30))
    assert set(runs.values()) == {b"1"}  # every item ran once


def test_a_definition_must_map_over_an_earlier_output() -> None:
    from orchestration.catalog import load_catalog
    from orchestration.loader import compile_plan, read_definition

    bad = {
        "steps": [
            step("echo", "src"),
            {**mapping(), "map": {**mapping()["map"], "over": "nope.items"}},
        ]
    }
    with pytest.raises(DefinitionError) as err:
        compile_plan(read_definition(bad), load_catalog(["tests.agents"]))
    assert "steps[1].map.over" in str(err.value)
    assert "'nope' is not produced by any earlier step" in str(err.value)
