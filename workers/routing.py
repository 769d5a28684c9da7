"""Where each task goes: ``<agent>.<task>`` to ``agent.<agent>``, engine tasks to control."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agents.base import agent_queue
from agents.registry import AgentRegistry
from orchestration.compiler import CONTROL_QUEUE


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
) -> dict[str, str]:
    """Celery router: the queue follows from the task name alone."""
    prefix = name.split(".", 1)[0]
    return {"queue": CONTROL_QUEUE if prefix == "baton" else agent_queue(prefix)}


def queues_for(
    reg: AgentRegistry, agent_ids: Iterable[str] | None, *, control: bool = True
) -> list[str]:
    """Queue names a worker consumes: the named agents' (all if None), plus control."""
    ids = list(agent_ids) if agent_ids else [a.agent_id for a in reg]
    queues = [reg.get_agent(a).queue for a in ids]
    return [*queues, CONTROL_QUEUE] if control else queues
