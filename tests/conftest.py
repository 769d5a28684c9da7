"""Session fixtures: a private redis-server and real ``baton worker`` processes.

Nothing here is faked: the Redis is a real server on a free port (never the machine's
shared one), the workers are ``python -m workers.cli worker`` subprocesses consuming
real queues, and readiness is confirmed by a Celery ping, never by a sleep.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestration.client import WorkflowOrchestrator
from orchestration.settings import BatonSettings
from workers.embedded import LocalWorkers, RedisServer

ROOT = Path(__file__).resolve().parents[1]
PARALLEL_AGENTS = ["validator", "enricher", "classifier", "scorer", "testkit"]
OWN_WORKERS = {"slowapi"}  # consumed only by the workers a test starts itself


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker_env(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The environment of every process of the session: workers, CLI runs, the tests."""
    home = tmp_path_factory.mktemp("baton-home")
    env = {
        "BATON_REDIS_URL": redis_server.url,
        "BATON_KEY_PREFIX": f"bt-{uuid.uuid4().hex[:6]}",
        "BATON_AGENT_MODULES": "tests.agents",
        "BATON_HOME": str(home),
        "BATON_TEST_REDIS": redis_server.url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    os.environ.update(env)  # the test process publishes messages too
    return env


@pytest.fixture(scope="session")
def settings(worker_env: dict[str, str]) -> BatonSettings:
    return BatonSettings()


@pytest.fixture(scope="session")
def orchestrator(settings: BatonSettings) -> Iterator[WorkflowOrchestrator]:
    orch = WorkflowOrchestrator(settings.redis_url, settings=settings, local_workers=False)
    yield orch
    orch.close()


@pytest.fixture(scope="session")
def workers(
    orchestrator: WorkflowOrchestrator, worker_env: dict[str, str], settings: BatonSettings
) -> Iterator[LocalWorkers]:
    """Two worker processes: one for every queue, one more for the parallel agents."""
    assert settings.redis_url
    every = [a.agent_id for a in orchestrator.registry if a.agent_id not in OWN_WORKERS]
    pool = LocalWorkers(
        settings.redis_url,
        [every, PARALLEL_AGENTS],
        concurrency=2,
        env=worker_env,
        log_dir=settings.home / "logs",
    )
    pool.start(orchestrator.app)
    yield pool
    pool.stop()


@pytest.fixture
def orch(orchestrator: WorkflowOrchestrator, workers: LocalWorkers) -> WorkflowOrchestrator:
    """An orchestrator whose workflows will run: workers are up."""
    return orchestrator


@pytest.fixture
def raw_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()
