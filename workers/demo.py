"""``baton demo``: embedded Redis, a worker process per agent queue, two real workflows."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from agents.registry import load_agents
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import EmbeddedRedis, LocalWorkers
from orchestration.settings import BatonSettings, redact
from workers.routing import queues_for

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEMO_WORKFLOWS = ("data_analysis_pipeline.yaml", "customer_intelligence.yaml")


class Demo:
    """Owns everything it starts, and stops exactly that on exit."""

    def __init__(self, settings: BatonSettings, console: Any = None) -> None:
        self.settings = settings
        self.registry = load_agents(settings.agent_modules)
        self.embedded = EmbeddedRedis(settings.home)
        self.redis_url = ""
        self.orchestrator: WorkflowOrchestrator
        self.workers: LocalWorkers
        self.queues = queues_for(self.registry, None)

    def __enter__(self) -> Demo:
        url = self.settings.redis_url or self.embedded.ensure()
        self.redis_url = redact(url)
        self.orchestrator = WorkflowOrchestrator(
            url, settings=self.settings, registry=self.registry, local_workers=False
        )
        groups = [[agent.agent_id] for agent in self.registry]
        self.workers = LocalWorkers(url, groups, concurrency=1, log_dir=self.settings.home / "logs")
        try:
            self.workers.start(self.orchestrator.app)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start(self) -> list[str]:
        return [self.orchestrator.run_workflow(EXAMPLES / name) for name in DEMO_WORKFLOWS]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if getattr(self, "workers", None):
            self.workers.stop()
        if getattr(self, "orchestrator", None):
            self.orchestrator.close()
        self.embedded.stop()
