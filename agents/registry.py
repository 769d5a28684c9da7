"""Agents and the process-wide registry they add themselves to; nothing branches on ids."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from agents.base import NoParams, Reads, TaskFn, TaskType
from orchestration.errors import AgentModuleError, DuplicateAgent, UnknownAgent, UnknownTaskType
from orchestration.model.limits import KeyFn, Limit, declare
from orchestration.model.names import agent_queue

BUILTIN_MODULES = (
    "agents.data_processor",
    "agents.analyzer",
    "agents.reporter",
    "agents.validator",
    "agents.enricher",
    "agents.classifier",
    "agents.scorer",
    "agents.llm",
    "agents.baton",
)


class AgentRegistry:
    """Agents by id; it is the catalog (``orchestration.catalog.Catalog``) that workflow
    definitions are checked against."""

    def __init__(self) -> None:
        self._agents: dict[str, Agent] = {}

    def add(self, agent: Agent) -> None:
        existing = self._agents.get(agent.agent_id)
        if existing is not None and existing is not agent:
            raise DuplicateAgent(f"agent {agent.agent_id!r} is registered twice")
        self._agents[agent.agent_id] = agent

    def get_agent(self, agent_id: str) -> Agent:
        try:
            return self._agents[agent_id]
        except KeyError:
            known = ", ".join(sorted(self._agents)) or "none"
            raise UnknownAgent(f"unknown agent {agent_id!r} (registered: {known})") from None

    def get_task(self, agent_id: str, task_type: str) -> TaskType:
        agent = self.get_agent(agent_id)
        try:
            return agent.task_types[task_type]
        except KeyError:
            known = ", ".join(sorted(agent.task_types)) or "none"
            raise UnknownTaskType(
                f"agent {agent_id!r} has no task type {task_type!r} (it has: {known})"
            ) from None

    def __iter__(self) -> Iterator[Agent]:
        return iter(sorted(self._agents.values(), key=lambda a: a.agent_id))

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def declared_limits(self) -> dict[str, Limit]:
        return {lim.name: lim for tt in self.task_types() for lim in tt.limits}

    def task_types(self) -> Iterator[TaskType]:
        for agent in self:
            yield from agent.task_types.values()


registry = AgentRegistry()


@dataclass
class Agent:
    """A named agent type. Creating one registers it; its tasks register with ``@task``.

    Example::

        scorer = Agent("scorer", description="RFM scores per customer")

        @scorer.task(params=ScoreParams)
        def score_records(step: StepInput[ScoreParams]) -> dict: ...

    ``rate_limit`` ("60/m") and ``concurrency_limit`` (10) hold for all the agent's steps
    together, across every worker process and machine (``orchestration/model/limits.py``).
    """

    agent_id: str
    description: str = ""
    task_types: dict[str, TaskType] = field(default_factory=dict)
    register: bool = True
    rate_limit: str | None = None
    concurrency_limit: int | None = None
    limit: Limit | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.limit = declare(self.agent_id, self.rate_limit, self.concurrency_limit)
        if self.register:
            registry.add(self)

    @property
    def queue(self) -> str:
        return agent_queue(self.agent_id)

    def task(
        self,
        name: str | None = None,
        *,
        params: type[BaseModel] = NoParams,
        output: type[BaseModel] | None = None,
        description: str | None = None,
        reads: Reads = (),
        compensation: str | None = None,
        rate_limit: str | None = None,
        concurrency_limit: int | None = None,
        limit_key: KeyFn | None = None,
    ) -> Callable[[TaskFn], TaskFn]:
        """Register ``fn`` as task type ``name`` (default: the function's name).

        ``reads``: the shared_data keys the task needs, or a function of its parameters
        giving them; a workflow where no earlier step produces one is refused at creation.
        ``compensation``: the name of another task type of this agent that undoes this
        one; it runs (in reverse step order) when a later step fails the workflow.
        ``rate_limit``/``concurrency_limit``: this task type's own limits, on top of the
        agent's; with ``limit_key`` (a function of the validated parameters, e.g.
        ``lambda p: p.api_key_id``) each key has its own budget. Malformed: ``LimitError``.
        An ``async def`` function is awaited on the worker's event loop.
        """

        def decorate(fn: TaskFn) -> TaskFn:
            task_name = name or fn.__name__
            if task_name in self.task_types:
                raise DuplicateAgent(f"{self.agent_id}.{task_name} is registered twice")
            doc = description if description is not None else (fn.__doc__ or "").strip()
            own = declare(f"{self.agent_id}.{task_name}", rate_limit, concurrency_limit, limit_key)
            limits = tuple(lim for lim in (self.limit, own) if lim is not None)
            self.task_types[task_name] = TaskType(
                self.agent_id,
                task_name,
                fn,
                params,
                output,
                doc.split("\n")[0],
                reads,
                compensation,
                limits,
            )
            return fn

        return decorate


def load_agents(extra_modules: Iterable[str] = ()) -> AgentRegistry:
    """Import the built-in agents and any user modules (``BATON_AGENT_MODULES``).

    User modules are found as ``celery -A`` finds apps: on ``sys.path`` and from the
    current directory (searched last, so a local file never shadows an installed package).
    """
    for name in BUILTIN_MODULES:
        importlib.import_module(name)
    user = [name for name in extra_modules if name]
    if user and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    for name in user:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise  # the module was found; something it imports is missing
            raise AgentModuleError(
                f"BATON_AGENT_MODULES names {name!r}, which is not importable from "
                f"{os.getcwd()} or sys.path ({exc})"
            ) from exc
    return registry
