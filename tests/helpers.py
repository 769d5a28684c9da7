"""Small helpers shared by the tests: step builders and bounded waits on real state."""

from __future__ import annotations

import ast
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from celery import Celery

if TYPE_CHECKING:
    from orchestration.client import WorkflowOrchestrator

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


def step(task_type: str, output_key: str | None = None, **parameters: Any) -> dict[str, Any]:
    """A testkit step in the original dict format."""
    s: dict[str, Any] = {"agent_id": "testkit", "task_type": task_type, "parameters": parameters}
    if output_key:
        s["output_key"] = output_key
    return s


def gated(gate: str, *after: dict[str, Any]) -> dict[str, Any]:
    """echo, then a step held at ``gate`` (see ``tests/agents.gate``), then ``after`` (or echo)."""
    rest = list(after) or [step("echo", "c")]
    return {"steps": [step("echo", "a"), step("gate", "held", name=gate), *rest]}


def eventually(check: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Re-check real state until it holds: a bounded wait for other processes, not a sleep.

    An exception counts as "not yet" (a server still starting); the last one is reported.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = check()
        except Exception as exc:
            value, last = None, exc  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what} (last error: {last})"
            )
        time.sleep(0.05)


def wait_gate_started(r: redis.Redis, name: str, count: int = 1, timeout: float = 30.0) -> None:
    eventually(lambda: r.llen(f"testlog:gate:{name}:started") >= count, timeout, f"gate {name}")


def held_at_gate(
    orch: WorkflowOrchestrator, r: redis.Redis, name: str, *after: dict[str, Any]
) -> tuple[str, str]:
    """Run ``gated`` at a new gate (``name`` and a random suffix) until its step is held
    there: the gate and the workflow id."""
    gate = f"{name}-{uuid.uuid4().hex[:8]}"
    wid = orch.run_workflow(gated(gate, *after))
    wait_gate_started(r, gate)
    return gate, wid


def open_gate(r: redis.Redis, name: str, times: int = 1) -> None:
    r.rpush(f"testlog:gate:{name}:open", *["open"] * times)


def redeliver(app: Celery, r: redis.Redis, workflow_id: str, step_id: str) -> None:
    """Deliver a step's recorded message again, byte for byte: a duplicate delivery."""
    msg = json.loads(r.get(f"testlog:msg:{workflow_id}:{step_id}"))
    with app.producer_or_acquire() as producer:
        producer.publish(
            msg["body"], exchange="", routing_key=msg["routing_key"], headers=msg["headers"],
            serializer="json", correlation_id=msg["headers"]["id"], retry=True,
        )  # fmt: skip


def example_literal(path: str, name: str) -> Any:
    """The literal bound to ``name`` in ``path`` (from the checkout's root), read, not run."""
    tree = ast.parse((ROOT / path).read_text())
    [value] = [
        node.value for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == [name]
    ]  # fmt: skip
    return ast.literal_eval(value)


# The original design's Data Analysis Pipeline, as the README's quickstart runs it.
QUICKSTART_PIPELINE: dict[str, Any] = example_literal("examples/quickstart.py", "pipeline")
# The first two steps of the original design's workflows, on the shipped dataset.
EXTRACT_AND_CLEAN: list[dict[str, Any]] = QUICKSTART_PIPELINE["steps"][:2]
