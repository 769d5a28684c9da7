"""Control: duplicates commit once; cancel, pause/resume, retry; safe client retries."""

from __future__ import annotations

import uuid

import pytest
import redis

from orchestration import TaskStatus, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import eventually, held_at_gate, open_gate, redeliver, step

pytestmark = pytest.mark.workflow_suite


def events(orch: WorkflowOrchestrator, wid: str, event: str, step_id: str) -> int:
    return sum(
        h.event == event and h.step == step_id for h in orch.get_context(wid).execution_history
    )


def test_a_step_delivered_twice_commits_once(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    g, wid = held_at_gate(orch, raw_redis, "g")

    # Given step_2 running and step_1 committed, both messages are delivered again.
    redeliver(orch.app, raw_redis, wid, "step_1")
    redeliver(orch.app, raw_redis, wid, "step_2")
    eventually(lambda: events(orch, wid, "duplicate_dropped", "step_1"), what="step_1's copy")
    open_gate(raw_redis, g)  # the copy of step_2 waits on the lease meanwhile
    ctx = orch.wait(wid, timeout=60)
    eventually(lambda: events(orch, wid, "duplicate_dropped", "step_2"), what="step_2's copy")

    assert ctx.status == WorkflowStatus.COMPLETED
    assert events(orch, wid, "step_completed", "step_2") == 1
    assert raw_redis.llen(f"testlog:gate:{g}:started") == 1  # the agent never ran twice
    assert events(orch, wid, "duplicate_dropped", "step_1") == 1
    assert events(orch, wid, "step_completed", "step_3") == 1
    versions = [p.version for p in orch.get_checkpoints(wid)]
    assert versions == sorted(set(versions)) == [0, 1, 2, 3]  # one version per commit, increasing
    assert orch.store.outstanding(wid) == set()  # every dispatched task was accounted for


def test_cancel_mid_run_revokes_what_is_queued_and_refuses_the_running_commit(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    g, wid = held_at_gate(orch, raw_redis, "g")

    orch.cancel_workflow(wid)
    assert orch.get_workflow_status(wid).status == WorkflowStatus.CANCELLED
    open_gate(raw_redis, g)
    eventually(lambda: events(orch, wid, "commit_refused", "step_2"), what="the refused commit")

    ctx = orch.wait(wid, timeout=10)
    assert ctx.status == WorkflowStatus.CANCELLED
    assert list(ctx.task_results) == ["step_1"]
    assert sorted(ctx.shared_data) == ["a"]
    assert not raw_redis.exists(f"testlog:msg:{wid}:step_3")  # step_3 was never even sent


def test_pause_stops_before_the_next_step_and_resume_continues_from_there(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    g, wid = held_at_gate(orch, raw_redis, "g", step("echo", "c"), step("echo", "d"))

    orch.pause_workflow(wid)
    open_gate(raw_redis, g)  # the running step finishes and commits while paused
    eventually(lambda: orch.store.redis.hget(orch.store.keys(wid).meta, "paused_at"),
               what="the workflow to stop at the pause")  # fmt: skip
    paused = orch.get_context(wid)
    assert paused.status == WorkflowStatus.PAUSED
    assert list(paused.task_results) == ["step_1", "step_2"]

    orch.resume_workflow(wid)
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED
    assert list(ctx.task_results) == ["step_1", "step_2", "step_3", "step_4"]
    assert events(orch, wid, "step_completed", "step_3") == 1
    assert [h.event for h in ctx.execution_history].count("workflow_resumed") == 1


def test_retry_workflow_reruns_only_what_had_not_committed(orch: WorkflowOrchestrator) -> None:
    steps = [
        step("echo", "a"),
        step("echo", "b"),
        step("flaky", "c", failures=1),
        step("echo", "d"),
    ]
    wid = orch.run_workflow({"steps": steps})
    first = orch.wait(wid, timeout=60)
    assert (first.status, first.failed_step) == (WorkflowStatus.FAILED, "step_3")

    orch.retry_workflow(wid)
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.run == 2
    assert ctx.shared_data["c"] == {"attempts": 2}
    for committed_once in ("step_1", "step_2", "step_4"):
        assert events(orch, wid, "step_completed", committed_once) == 1
    assert ctx.task_results["step_3"].status == TaskStatus.COMPLETED
    assert (ctx.error, ctx.failed_step) == (None, None)


def test_submitting_the_same_workflow_id_twice_gives_one_workflow(
    orch: WorkflowOrchestrator,
) -> None:
    wid = f"order-{uuid.uuid4().hex[:8]}"
    definition = {"steps": [step("echo", "a", value=1)]}
    assert orch.run_workflow(definition, workflow_id=wid) == wid
    assert orch.run_workflow(definition, workflow_id=wid) == wid
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert events(orch, wid, "step_completed", "step_1") == 1
    assert [h.event for h in ctx.execution_history].count("workflow_created") == 1


def test_the_cli_retries_and_rolls_back_and_refuses_in_one_line(
    orchestrator: WorkflowOrchestrator, workers: object, worker_env: dict[str, str]
) -> None:
    from tests.test_cli_failures import one_line
    from tests.test_client import baton

    wid = orchestrator.run_workflow(
        {"steps": [step("echo", "a"), step("flaky", "c", failures=1), step("echo", "d")]}
    )
    assert orchestrator.wait(wid, timeout=60).status == WorkflowStatus.FAILED

    for args, expected in [
        (["resume", wid], f"workflow {wid} is failed, not paused"),
        (["rollback", wid, "99"], f"workflow {wid} has checkpoints 0..3, not 99"),
        (["rollback", wid, "--", "-1"], f"workflow {wid} has checkpoints 0..3, not -1"),
        (["rollback", wid, "-1"], "No such option '-1'"),
    ]:
        refused = baton(*args, env=worker_env)
        assert refused.returncode == 2, refused.stderr
        assert expected in one_line(refused.stderr)
    assert orchestrator.get_workflow_status(wid).status == WorkflowStatus.FAILED  # untouched

    retried = baton("retry", wid, env=worker_env)
    assert retried.returncode == 0 and retried.stdout.startswith(f"{wid}: running ("), retried
    assert orchestrator.wait(wid, timeout=60).status == WorkflowStatus.COMPLETED
    again = baton("retry", wid, env=worker_env)
    assert again.returncode == 2
    assert f"workflow {wid} is completed, not failed" in one_line(again.stderr)

    rolled = baton("rollback", wid, "1", env=worker_env)
    assert (rolled.returncode, rolled.stderr) == (0, "")
    assert rolled.stdout.startswith(f"{wid}: paused (")
    assert orchestrator.get_context(wid).status == WorkflowStatus.PAUSED
    orchestrator.cancel_workflow(wid)
