"""Messages carry references, never state: their size is measured on the wire.

``tests/agents.py`` records every task message published, in the client and in the
workers, through Celery's ``after_task_publish`` signal (it fires for messages a commit sent too).
"""

from __future__ import annotations

import json

import pytest
import redis

from orchestration import WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import eventually, step

pytestmark = pytest.mark.workflow_suite


def message_sizes(r: redis.Redis, workflow_id: str, count: int) -> list[dict[str, object]]:
    """The ``count`` messages the workflow's publishers recorded. On RabbitMQ a worker
    records its message once it has published it, which may be after the next step has
    already run and the workflow ended: wait (bounded) for the record."""
    key = f"testlog:msgsize:{workflow_id}"
    eventually(lambda: r.llen(key) >= count, 30, f"{count} recorded messages of {workflow_id}")
    return [json.loads(m) for m in r.lrange(key, 0, -1)]


def echo(value: object, output_key: str | None = None) -> dict[str, object]:
    return step("echo", output_key, value=value)


def test_message_bytes_do_not_depend_on_shared_data_size(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    by_size: dict[int, dict[object, int]] = {}
    for size in (1024, 1024 * 1024):
        wid = orch.run_workflow(
            {
                "name": f"payload {size}",
                "steps": [
                    {
                        "agent_id": "testkit",
                        "task_type": "payload",
                        "output_key": "blob",
                        "parameters": {"size": size},
                    },
                    {
                        "agent_id": "testkit",
                        "task_type": "read",
                        "output_key": "r",
                        "parameters": {"key": "blob"},
                    },
                    echo("end", "end"),
                ],
            }
        )
        ctx = orch.wait(wid, timeout=60)
        assert ctx.status == WorkflowStatus.COMPLETED
        assert ctx.shared_data["r"]["bytes"] >= size  # the state really was handed on
        sizes = message_sizes(raw_redis, wid, 3)
        by_size[size] = {m["step"]: int(m["bytes"]) for m in sizes}  # type: ignore[call-overload]

    small, large = by_size[1024], by_size[1024 * 1024]
    assert small.keys() == large.keys() == {"step_1", "step_2", "step_3"}
    for step_id in small:
        # Equal up to the publishing process's pid digits in the 'origin' header.
        assert abs(small[step_id] - large[step_id]) <= 16, (step_id, small[step_id], large[step_id])
        assert large[step_id] < 4096


def test_chained_groups_keep_every_message_small(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    """Celery embeds the rest of a chain in each chord header; Baton's messages do not grow."""
    groups = [
        {"parallel": [echo(f"{g}.{m}") for m in range(10)], "output_key": f"g{g}"} for g in range(6)
    ]
    wid = orch.run_workflow({"name": "6x10", "steps": groups})
    ctx = orch.wait(wid, timeout=120)
    assert ctx.status == WorkflowStatus.COMPLETED
    assert [ctx.shared_data[f"g{g}"]["successful_tasks"] for g in range(6)] == [10] * 6

    sizes = message_sizes(raw_redis, wid, 66)
    tasks = [str(m["task"]) for m in sizes]
    # Every member and every aggregate; nothing else.
    assert sorted(set(tasks)) == ["baton.aggregate", "testkit.echo"]
    assert (tasks.count("testkit.echo"), tasks.count("baton.aggregate")) == (60, 6)

    def biggest(group: str) -> int:
        return max(int(str(m["bytes"])) for m in sizes if str(m["step"]).startswith(group))

    assert max(biggest(f"step_{g}") for g in range(1, 7)) < 4096
    # Groups 2-6 are published by workers (the first by the client, without parent ids):
    # the second group's messages carry no more than the last's.
    assert abs(biggest("step_2") - biggest("step_6")) <= 16


def result_keys(r: redis.Redis) -> set[bytes]:
    """Celery's result keys and chord counters."""
    return {k for pattern in ("celery-task-meta-*", "*chord*") for k in r.scan_iter(pattern, 1000)}


def test_no_celery_result_is_written_for_what_the_state_store_holds(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    """Steps and aggregates are committed to the state store; Celery's result backend
    gets nothing (no ``celery-task-meta-*`` key, no chord counter)."""
    before = result_keys(raw_redis)
    group = {"parallel": [echo(i) for i in range(5)], "output_key": "g"}
    wid = orch.run_workflow({"name": "no results", "steps": [echo("a", "a"), group, echo("z")]})
    ctx = orch.wait(wid, timeout=60)

    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["g"]["successful_tasks"] == 5
    assert result_keys(raw_redis) - before == set()
