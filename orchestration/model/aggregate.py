"""Aggregators for parallel groups: members' TaskResults in, one summary out.

Registered by name like agents are; a group names one with ``aggregate`` (default
``summary``, the original design's fields with a true per-agent mean time).
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import fmean
from typing import Any

from pydantic import BaseModel

from orchestration.model.records import TaskResult, TaskStatus

Aggregator = Callable[[list[TaskResult], float], Any]
aggregators: dict[str, Aggregator] = {}


def aggregator(name: str) -> Callable[[Aggregator], Aggregator]:
    def register(fn: Aggregator) -> Aggregator:
        aggregators[name] = fn
        return fn

    return register


class AgentPerformance(BaseModel):
    tasks_completed: int
    tasks_failed: int
    average_time: float
    results: list[Any]


class GroupSummary(BaseModel):
    total_tasks: int
    successful_tasks: int
    failed_tasks: int
    success_rate: float
    total_execution_time: float
    agent_performance: dict[str, AgentPerformance]
    failures: dict[str, str]


@aggregator("summary")
def summary(results: list[TaskResult], wall_time: float) -> dict[str, Any]:
    """Counts, success rate, group wall time and per-agent performance."""
    ok = [r for r in results if r.status == TaskStatus.COMPLETED]
    by_agent: dict[str, list[TaskResult]] = {}
    for r in results:
        by_agent.setdefault(r.agent_id, []).append(r)
    perf = {
        agent: AgentPerformance(
            tasks_completed=sum(r.status == TaskStatus.COMPLETED for r in rs),
            tasks_failed=sum(r.status != TaskStatus.COMPLETED for r in rs),
            average_time=fmean(r.execution_time for r in rs),
            results=[r.result for r in rs if r.status == TaskStatus.COMPLETED],
        )
        for agent, rs in sorted(by_agent.items())
    }
    return GroupSummary(
        total_tasks=len(results),
        successful_tasks=len(ok),
        failed_tasks=len(results) - len(ok),
        success_rate=len(ok) / len(results) if results else 0.0,
        total_execution_time=wall_time,
        agent_performance=perf,
        failures={
            r.step_id: r.error or "failed" for r in results if r.status != TaskStatus.COMPLETED
        },
    ).model_dump(mode="json")


@aggregator("merge")
def merge(results: list[TaskResult], wall_time: float) -> dict[str, Any]:
    """Each successful member's result keyed by its step id, for steps that read them all."""
    return {r.step_id: r.result for r in results if r.status == TaskStatus.COMPLETED}


@aggregator("collect")
def collect(results: list[TaskResult], wall_time: float) -> list[Any]:
    """Every member's result in order (a failed one's is null): a map's outputs as a list."""
    return [r.result if r.status == TaskStatus.COMPLETED else None for r in results]
