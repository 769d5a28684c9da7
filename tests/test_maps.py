"""Maps: one task per item of a list that an earlier step produced, however long."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from orchestration import DefinitionError, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import eventually, open_gate, step, wait_gate_started

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
    wid = orch.run_workflow(
        {"steps": [source(items), mapping(max_concurrency=2, batch_size=1, tag=tag)]}
    )
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert int(raw_redis.get(f"testlog:map:{tag}:max")) <= 2
    runs = raw_redis.hgetall(f"testlog:map:{tag}:runs")
    assert sorted(int(k) for k in runs) == list(range(30))
    assert set(runs.values()) == {b"1"}  # every item ran once


def test_a_definition_must_map_over_an_earlier_output() -> None:
    from orchestration.client.agents import load_catalog
    from orchestration.definition import compile_plan, read_definition

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


def held_then(
    orch: WorkflowOrchestrator, r: redis.Redis, n: int, act: Callable[[str], object]
) -> tuple[str, str]:
    """A map over ``n`` items that each wait at a gate, two at a time: ``act`` on the
    workflow while the first two wait there, then the gate opened for every item. The gate
    (the map's tag) and the workflow id."""
    tag = uuid.uuid4().hex[:8]
    items = [{"value": i, "hold": 30} for i in range(n)]
    wid = orch.run_workflow(
        {"steps": [source(items), mapping(max_concurrency=2, batch_size=1, tag=tag)]}
    )
    wait_gate_started(r, tag, count=2)
    act(wid)
    open_gate(r, tag, times=n)
    return tag, wid


def test_a_paused_map_stops_taking_items_and_resumes_with_the_rest(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    tag, wid = held_then(orch, raw_redis, 12, orch.pause_workflow)

    # The two items in flight commit; nothing else starts while paused.
    eventually(lambda: orch.get_workflow_status(wid).maps[0].done == 2, 30, "in-flight items")
    assert orch.get_workflow_status(wid).status == WorkflowStatus.PAUSED
    assert raw_redis.llen(f"testlog:gate:{tag}:started") == 2

    orch.resume_workflow(wid)
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert [r["index"] for r in ctx.shared_data["squares"]] == list(range(12))
    assert set(raw_redis.hgetall(f"testlog:map:{tag}:runs").values()) == {b"1"}


def test_a_retried_map_runs_only_the_items_that_failed(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    tag, broken = uuid.uuid4().hex[:8], f"testlog:broken:{uuid.uuid4().hex[:8]}"
    raw_redis.set(broken, 1)
    items = [{"value": i, **({"until": broken} if i % 4 == 0 else {})} for i in range(12)]
    wid = orch.run_workflow(
        {"steps": [source(items), mapping(batch_size=5, on_failure="fail", tag=tag)]}
    )
    failed = orch.wait(wid, timeout=60)
    assert failed.status == WorkflowStatus.FAILED
    assert failed.error == "map step_2: 3 of 12 items failed (on_failure: fail)"

    raw_redis.delete(broken)  # the cause is fixed
    orch.retry_workflow(wid)
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.shared_data["squares"] == [{"index": i, "square": i * i} for i in range(12)]
    runs = {int(k): int(v) for k, v in raw_redis.hgetall(f"testlog:map:{tag}:runs").items()}
    assert runs == {i: 2 if i % 4 == 0 else 1 for i in range(12)}


def test_a_cancelled_map_commits_nothing_more(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    tag, wid = held_then(orch, raw_redis, 10, orch.cancel_workflow)
    ctx = orch.wait(wid, timeout=30)
    assert ctx.status == WorkflowStatus.CANCELLED
    eventually(lambda: not orch.store.outstanding(wid), 30, "the drain")
    assert orch.get_workflow_status(wid).maps[0].done == 0
    assert raw_redis.llen(f"testlog:gate:{tag}:started") == 2


def test_a_rollback_to_before_a_map_runs_it_again_on_the_list_it_then_finds(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    tag = uuid.uuid4().hex[:8]
    items = [{"value": i} for i in range(6)]
    wid = orch.run_workflow({"steps": [source(items), mapping(batch_size=4, tag=tag)]})
    assert orch.wait(wid, timeout=60).status == WorkflowStatus.COMPLETED
    before_map = next(c.version for c in orch.get_checkpoints(wid) if c.step == "step_1")

    orch.rollback(wid, before_map)
    assert "squares" not in orch.get_context(wid).shared_data
    orch.resume_workflow(wid)
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert [r["square"] for r in ctx.shared_data["squares"]] == [i * i for i in range(6)]
    runs = {int(k): int(v) for k, v in raw_redis.hgetall(f"testlog:map:{tag}:runs").items()}
    assert runs == dict.fromkeys(range(6), 2)  # every item ran again
    assert orch.get_workflow_status(wid).maps[0].done == 6  # counted once, in the new epoch
