"""Which queues a worker consumes: one per agent it serves (``agent.<id>``), and control."""

from __future__ import annotations

from collections.abc import Iterable

from agents.registry import AgentRegistry
from orchestration.model.names import CONTROL_QUEUE


def queues_for(
    reg: AgentRegistry, agent_ids: Iterable[str] | None, *, control: bool = True
) -> list[str]:
    """Queue names a worker consumes: the named agents' (all if None), plus control."""
    ids = list(agent_ids) if agent_ids else [a.agent_id for a in reg]
    queues = list(dict.fromkeys(reg.get_agent(a).queue for a in ids))
    if CONTROL_QUEUE in queues:  # (the engine's own agent: its steps are control work)
        queues.remove(CONTROL_QUEUE)
    return [*queues, CONTROL_QUEUE] if control else queues
