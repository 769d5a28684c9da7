"""No silent stall for a plain step: a step message taken by a worker that has not loaded
its agent (an unregistered Celery task there) is handed on to its agent's queue if it came
by another one, or fails its step saying which agent no worker loaded, at once: never a
workflow left running until the reaper sends the same message again."""

from __future__ import annotations

from orchestration import WorkflowStatus
from orchestration.client.embedded import RedisServer
from orchestration.flow.compiler import step_signature
from orchestration.model.names import CONTROL_QUEUE, Event, agent_queue
from orchestration.settings import BatonSettings
from tests.helpers import step
from tests.test_map_limits import split_stack  # (a database and workers of its own)

SIDE_QUEUE = "agent.side"  # a queue no agent's steps are sent to


def test_a_step_no_worker_loaded_the_agent_of_fails_saying_so(
    redis_server: RedisServer, settings: BatonSettings, worker_env: dict[str, str]
) -> None:
    # The only worker on solo's queue is told to serve it without the module defining it.
    queues = [CONTROL_QUEUE, agent_queue("solo")]
    with split_stack(redis_server, 7, settings, worker_env, bare_queues=queues,
                     agents="testkit") as orch:  # fmt: skip
        wid = orch.run_workflow({"steps": [
            step("echo", "a"),
            {"agent_id": "solo", "task_type": "note", "output_key": "b"},
            step("echo", "c"),
        ]})  # fmt: skip
        ctx = orch.wait(wid, timeout=60)
        report = orch.get_workflow_status(wid)
    assert ctx.status == WorkflowStatus.FAILED
    assert report.failed_step == "step_2"
    assert report.error is not None
    assert "no worker loaded agent 'solo' to run step step_2: unknown agent 'solo'" in report.error
    assert f"serving {agent_queue('solo')}; BATON_AGENT_MODULES must load it" in report.error
    assert list(ctx.task_results) == ["step_1", "step_2"]  # once: not sent again


def test_a_step_that_came_by_another_queue_is_handed_on_to_its_agents(
    redis_server: RedisServer, settings: BatonSettings, worker_env: dict[str, str]
) -> None:
    # The worker without solo takes the step from a queue that is not solo's.
    queues = [CONTROL_QUEUE, SIDE_QUEUE]
    with split_stack(redis_server, 8, settings, worker_env, bare_queues=queues,
                     agents="solo") as orch:  # fmt: skip
        note = {"agent_id": "solo", "task_type": "note", "parameters": {"value": "v"}}
        wid = orch.create_workflow({"steps": [{**note, "output_key": "b"}]})
        # Started as a client would, but its first message sent by the side queue.
        orch.store.transition(
            wid, [WorkflowStatus.CREATED], WorkflowStatus.RUNNING, event=Event.WORKFLOW_STARTED
        )
        task = orch.store.task(wid, "step_1")
        step_signature(orch.app, wid, task, 1).apply_async(queue=SIDE_QUEUE)
        ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert ctx.shared_data["b"] == {"noted": "v"}
    assert (ctx.task_results["step_1"].worker or "").startswith("agents")
