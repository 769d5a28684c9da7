"""Sub-workflows: a workflow run as one step of another, with its own id, linked both ways."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from orchestration import AmbiguousWorkflowId, DefinitionError, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import eventually, open_gate, step, wait_gate_started

pytestmark = pytest.mark.workflow_suite


def child(*steps: dict[str, Any], name: str = "child") -> dict[str, Any]:
    return {"name": name, "steps": list(steps)}


def parent(sub: dict[str, Any] | str, *after: dict[str, Any], **link: Any) -> dict[str, Any]:
    return {
        "name": "parent",
        "steps": [step("echo", "a", value="seed value"),
                  {"workflow": sub, **link}, *after],
    }  # fmt: skip


def test_a_sub_workflow_runs_as_a_step_with_its_inputs_and_outputs(
    orch: WorkflowOrchestrator,
) -> None:
    sub = child(step("echo", "b", value="made by the child"))
    wid = orch.run_workflow(
        parent(sub, step("echo", "c"), inputs={"seed": "a.value"}, outputs={"from_child": "b"})
    )
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.shared_data["from_child"]["value"] == "made by the child"
    assert "from_child" in ctx.shared_data["c"]["saw_keys"]
    cid = f"{wid}.step_2"
    assert ctx.task_results["step_2"].result == {"workflow_id": cid, "status": "completed"}
    kid = orch.get_context(cid)
    assert kid.shared_data["seed"] == "seed value"  # its input, from the parent's path
    assert kid.shared_data["b"]["saw_keys"] == ["seed"]
    # Linked both ways.
    assert orch.get_workflow_status(wid).children == [cid]
    report = orch.get_workflow_status(cid)
    assert (report.parent, report.parent_step) == (wid, "step_2")


def test_a_registered_workflow_is_called_by_name(orch: WorkflowOrchestrator) -> None:
    name = f"registered-{uuid.uuid4().hex[:6]}"
    assert orch.register_workflow(child(step("echo", "b", value=7), name=name)) == name
    ctx = orch.wait(orch.run_workflow(parent(name, outputs={"got": "b"})), timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.shared_data["got"]["value"] == 7


def test_a_failed_sub_workflow_fails_its_step_and_a_retry_goes_on_with_it(
    orch: WorkflowOrchestrator,
) -> None:
    sub = child(step("echo", "x"), step("flaky", "y", failures=1, permanent=True))
    wid = orch.run_workflow(parent(sub, step("echo", "after")))
    failed = orch.wait(wid, timeout=60)
    cid = f"{wid}.step_2"
    assert (failed.status, failed.failed_step) == (WorkflowStatus.FAILED, "step_2")
    assert failed.error.startswith(f"sub-workflow {cid} failed at step_2: StepError: record 1")

    orch.retry_workflow(wid)  # the child is retried, from its failed step
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    kid = orch.get_context(cid)
    assert kid.status == WorkflowStatus.COMPLETED and kid.run == 2
    done = [h.step for h in kid.execution_history if h.event == "step_completed"]
    assert done.count("step_1") == 1  # not run again


def test_a_retried_parent_does_not_run_a_completed_child_again(
    orch: WorkflowOrchestrator,
) -> None:
    wid = orch.run_workflow(
        parent(child(step("echo", "b")), step("flaky", "z", failures=1, permanent=True))
    )
    assert orch.wait(wid, timeout=60).status == WorkflowStatus.FAILED
    orch.retry_workflow(wid)
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    kid = orch.get_context(f"{wid}.step_2")
    assert kid.run == 1
    assert [h.event for h in kid.execution_history].count("workflow_completed") == 1


def test_cancel_and_pause_reach_the_child(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    g = f"sub-{uuid.uuid4().hex[:6]}"
    wid = orch.run_workflow(parent(child(step("gate", "held", name=g), step("echo", "b"))))
    cid = f"{wid}.step_2"
    wait_gate_started(raw_redis, g)
    [waits] = [w for w in orch.waiting() if w.workflow_id == wid]
    assert (waits.step_id, waits.child, waits.name) == ("step_2", cid, None)
    orch.pause_workflow(wid)
    assert orch.get_workflow_status(cid).status == WorkflowStatus.PAUSED
    open_gate(raw_redis, g)
    eventually(lambda: "step_1" in orch.get_context(cid).task_results, 30, "the held step")
    orch.resume_workflow(wid)
    assert orch.wait(wid, timeout=60).status == WorkflowStatus.COMPLETED

    g2 = f"sub-{uuid.uuid4().hex[:6]}"
    wid2 = orch.run_workflow(parent(child(step("gate", "held", name=g2))))
    wait_gate_started(raw_redis, g2)
    orch.cancel_workflow(wid2)
    assert orch.get_workflow_status(f"{wid2}.step_2").status == WorkflowStatus.CANCELLED
    open_gate(raw_redis, g2)


def test_a_sub_workflow_is_checked_with_its_parent(orch: WorkflowOrchestrator) -> None:
    with pytest.raises(DefinitionError) as err:
        orch.create_workflow(
            parent(child(step("no_such_task", "b"), step("read", key="seed")),
                   inputs={"seed": "nope.value"})
        )  # fmt: skip
    text = str(err.value)
    assert "steps[1].workflow.steps[0].task_type" in text
    assert "steps[1].inputs.seed: 'nope.value': 'nope' is not produced" in text
    assert "reads 'seed'" not in text  # its inputs are the child's first keys
    with pytest.raises(
        DefinitionError, match=r"steps\[1\].outputs.out: the sub-workflow makes no 'gone'"
    ):
        orch.create_workflow(parent(child(step("echo", "b")), outputs={"out": "gone"}))
    with pytest.raises(DefinitionError, match="no workflow is registered as 'nowhere'"):
        orch.create_workflow(parent("nowhere"))


def test_a_sub_workflow_in_a_group_gives_its_outputs_to_the_steps_after_it(
    orch: WorkflowOrchestrator,
) -> None:
    sub = {
        "workflow": child(step("echo", "b", value="made in the group")),
        "inputs": {"seed": "a.value"},
        "outputs": {"from_child": "b"},
    }
    wid = orch.run_workflow({
        "name": "parent",
        "steps": [step("echo", "a", value="seed value"),
                  {"parallel": [sub, step("echo", "beside")]},
                  step("read", "after", key="from_child")],
    })  # fmt: skip
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    made = {"value": "made in the group", "saw_keys": ["seed"], "previous": []}
    assert ctx.shared_data["from_child"] == made
    assert ctx.shared_data["after"]["bytes"] == len(json.dumps(made))  # read from the parent
    assert "from_child" in ctx.shared_data["after"]["saw_keys"]
    assert orch.get_workflow_status(wid).children == [f"{wid}.step_2.1"]


def test_a_sub_workflow_on_a_branch_way_gives_its_outputs_to_the_steps_after_it(
    orch: WorkflowOrchestrator,
) -> None:
    sub = {
        "workflow": child(step("echo", "b", value="made on the way")),
        "outputs": {"from_child": "b"},
    }
    wid = orch.run_workflow({
        "name": "parent",
        "steps": [step("echo", "a", value="go"),
                  {"branch": {"on": "a.value",
                              "cases": {"go": [sub, step("read", "on_way", key="from_child")]},
                              "default": [step("echo", "from_child", value="default")]}},
                  step("read", "after", key="from_child")],
    })  # fmt: skip
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.shared_data["from_child"]["value"] == "made on the way"
    size = len(json.dumps(ctx.shared_data["from_child"]))
    assert ctx.shared_data["on_way"]["bytes"] == ctx.shared_data["after"]["bytes"] == size
    assert orch.get_workflow_status(wid).children == [f"{wid}.step_2.1.1"]


def test_nested_sub_workflow_outputs_are_checked_as_keys_of_their_own(
    orch: WorkflowOrchestrator,
) -> None:
    sub = {"workflow": child(step("echo", "b")), "outputs": {"out": "b"}}
    # On one way only: a step after the branch may not read it.
    with pytest.raises(DefinitionError, match="reads 'out', which no earlier step produces"):
        orch.create_workflow({"steps": [
            step("echo", "a"),
            {"when": {"path": "a.value", "equals": 1}, "then": [sub]},
            step("read", key="out")]})  # fmt: skip
    # Members of a group do not see each other's keys; the steps after it do.
    with pytest.raises(DefinitionError, match="reads 'out', which no earlier step produces"):
        orch.create_workflow({"steps": [{"parallel": [sub, step("read", key="out")]}]})
    orch.create_workflow({"steps": [{"parallel": [[sub, step("read", key="out")]]},
                                    step("read", key="out")]})  # fmt: skip
    # A key a sub-workflow makes is one key: no other step may make it too.
    with pytest.raises(
        DefinitionError, match=r"parallel\[1\].outputs.out: 'out' is already in use"
    ):
        orch.create_workflow({"steps": [{"parallel": [step("echo", "out"), sub]}]})
    with pytest.raises(DefinitionError, match="duplicate output_key 'out' .*parallel.0..outputs"):
        orch.create_workflow({"steps": [{"parallel": [sub, step("echo", "out")]}]})
    with pytest.raises(DefinitionError, match="duplicate output_key 'out' .*steps.1..outputs"):
        orch.create_workflow({"steps": [step("echo", "a"), sub, step("echo", "out")]})
    # A grandchild's outputs are keys of its parent, the child: the parent may map them.
    grand = child({"workflow": child(step("echo", "b")), "outputs": {"deep": "b"}})
    orch.create_workflow(parent(grand, step("read", key="got"), outputs={"got": "deep"}))
    # Two ways of one branch may each make it: only one of them runs.
    orch.create_workflow({"steps": [
        step("echo", "a"),
        {"when": {"path": "a.value", "equals": 1}, "then": [sub], "else": [step("echo", "out")]},
        step("read", key="out")]})  # fmt: skip


def test_a_name_keeps_its_definition_unless_replaced(orchestrator: WorkflowOrchestrator) -> None:
    name = f"kept-{uuid.uuid4().hex[:6]}"
    first, other = (child(step("echo", "b", value=v), name=name) for v in ("one", "two"))
    assert orchestrator.register_workflow(first) == name
    assert orchestrator.register_workflow(first) == name  # the same again: accepted
    with pytest.raises(DefinitionError) as err:
        orchestrator.register_workflow(other)
    assert err.value.problems == [("name", f"a different definition is registered as {name!r}")]
    assert orchestrator.definitions.get(name)["steps"][0]["parameters"] == {"value": "one"}
    assert orchestrator.register_workflow(other, replace=True) == name
    assert orchestrator.definitions.get(name)["steps"][0]["parameters"] == {"value": "two"}


def test_of_different_definitions_registered_at_once_under_one_name_one_is_kept(
    orchestrator: WorkflowOrchestrator,
) -> None:
    name = f"race-{uuid.uuid4().hex[:6]}"
    n = 8
    ready = threading.Barrier(n)

    def register(i: int) -> int | None:
        definition = child(step("echo", "b", value=i), name=name)
        ready.wait(timeout=30)
        try:
            orchestrator.register_workflow(definition)
        except DefinitionError:
            return None
        return i

    with ThreadPoolExecutor(n) as pool:
        kept = [i for i in pool.map(register, range(n)) if i is not None]
    assert len(kept) == 1
    assert orchestrator.definitions.get(name)["steps"][0]["parameters"] == {"value": kept[0]}


def test_a_prefix_of_a_parents_id_names_the_parent_not_its_children(
    orch: WorkflowOrchestrator,
) -> None:
    stem = f"nest-{uuid.uuid4().hex[:8]}"
    wid = orch.run_workflow(parent(child(step("echo", "b"))), f"{stem}-parent")
    assert orch.wait(wid, timeout=60).status == WorkflowStatus.COMPLETED
    cid = f"{wid}.step_2"
    assert orch.get_workflow_status(wid).children == [cid]

    assert orch.resolve_id(wid) == wid  # the exact id
    assert orch.resolve_id(cid) == cid
    assert orch.resolve_id(f"{stem}-par") == wid  # the parent and only its children
    assert orch.resolve_id(f"{wid}.st") == cid
    other = orch.create_workflow({"steps": [step("echo")]}, f"{stem}-parent2")
    assert orch.resolve_id(wid) == wid  # an exact id wins over the longer ones it begins
    with pytest.raises(AmbiguousWorkflowId) as err:
        orch.resolve_id(f"{stem}-par")
    assert f"begins more than one workflow id: {wid}, {other};" in str(err.value)
