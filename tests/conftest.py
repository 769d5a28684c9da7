"""Session fixtures: a private redis-server and real ``baton worker`` processes.

Nothing here is faked: the Redis is a real server on a free port (never the machine's
shared one), the workers are ``python -m workers.cli worker`` subprocesses consuming
real queues, and readiness is confirmed by a Celery ping, never by a sleep.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.settings import BatonSettings
from tests.browser import chromium  # noqa: F401  (a fixture, shared by browser tests)

ROOT = Path(__file__).resolve().parents[1]
PARALLEL_AGENTS = ["validator", "enricher", "classifier", "scorer", "testkit"]
# Agents consumed only by workers a test starts itself:
OWN_WORKERS = {"slowapi", "solo", "ghost", "aio", "throttle", "llm"}
# Those workers leave baton.control (aggregates) to the session's, so that a test holding
# aggregates at a gate knows who runs them.
NO_CONTROL = {"BATON_WORKER_NO_CONTROL": "1"}


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
        "BATON_STEP_LEASE_SECONDS": "3",  # a redelivered copy looks again after 1.5 s
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


@pytest.fixture(scope="session")
def asyncio_workers(
    orchestrator: WorkflowOrchestrator,
    workers: LocalWorkers,  # (the session's: they run the aggregates)
    worker_env: dict[str, str],
    settings: BatonSettings,
) -> Callable[[list[list[str]], int, str], LocalWorkers]:
    """Starts asyncio worker processes, one per list of queues, ``concurrency`` wide each,
    logging under ``logs`` in BATON_HOME; they leave aggregates to the session's."""
    assert settings.redis_url
    url = settings.redis_url

    def start(queues: list[list[str]], concurrency: int, logs: str) -> LocalWorkers:
        pool = LocalWorkers(
            url, queues, concurrency=concurrency, pool="asyncio", env=NO_CONTROL | worker_env,
            log_dir=settings.home / logs,
        )  # fmt: skip
        pool.start(orchestrator.app)
        return pool

    return start


@pytest.fixture(scope="session")
def aio_worker(
    asyncio_workers: Callable[[list[list[str]], int, str], LocalWorkers],
) -> Iterator[LocalWorkers]:
    """ONE worker process for the async agent, asyncio pool, 100 wide."""
    pool = asyncio_workers([["aio"]], 100, "logs-aio")
    yield pool
    pool.stop()


AMQP_URL = os.environ.get("BATON_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules marked ``workflow_suite`` run once per broker: Redis, then RabbitMQ."""
    if "orch" in metafunc.fixturenames and metafunc.definition.get_closest_marker("workflow_suite"):
        metafunc.parametrize("broker", ["redis", "amqp"], scope="session")


@pytest.fixture(scope="session")
def broker() -> str:
    return "redis"


def rabbitmq_reachable(url: str) -> str | None:
    """None if RabbitMQ answers at ``url``, else why not (after trying to start a local one)."""
    from kombu import Connection

    def ping() -> str | None:
        try:
            with Connection(url, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1)
            return None
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    why = ping()
    if why and shutil.which("rabbitmq-server") and "127.0.0.1" in url:
        subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, timeout=60)
        deadline = time.monotonic() + 60
        while why and time.monotonic() < deadline:
            time.sleep(1)  # waiting for an external server to come up, bounded
            why = ping()
    return why


@pytest.fixture(scope="session")
def amqp_stack(
    settings: BatonSettings, worker_env: dict[str, str], workers: LocalWorkers
) -> Iterator[WorkflowOrchestrator]:
    """The same Redis for state and results, RabbitMQ as the broker, its own workers."""
    why = rabbitmq_reachable(AMQP_URL)
    if why:
        pytest.skip(
            f"no RabbitMQ at {AMQP_URL} ({why}); set BATON_TEST_AMQP_URL to run the suite on it"
        )
    # Its own key prefix: the Redis stack's workers must not fire its timers (a worker
    # commits what it fires with its own broker's outbox).
    prefix = f"{settings.key_prefix}-amqp"
    amqp_settings = settings.model_copy(update={"broker_url": AMQP_URL, "key_prefix": prefix})
    orch = WorkflowOrchestrator(
        amqp_settings.redis_url, settings=amqp_settings, local_workers=False
    )
    env = {**worker_env, "BATON_BROKER_URL": AMQP_URL, "BATON_KEY_PREFIX": prefix}
    every = [a.agent_id for a in orch.registry if a.agent_id not in OWN_WORKERS]
    assert settings.redis_url
    pool = LocalWorkers(settings.redis_url, [every, PARALLEL_AGENTS], concurrency=2, env=env,
                        log_dir=settings.home / "logs-amqp")  # fmt: skip
    pool.start(orch.app)
    yield orch
    pool.stop()
    orch.close()


@pytest.fixture
def orch(broker: str, request: pytest.FixtureRequest) -> WorkflowOrchestrator:
    """An orchestrator whose workflows will run: workers are up (on the given broker)."""
    if broker == "amqp":
        return request.getfixturevalue("amqp_stack")  # type: ignore[no-any-return]
    request.getfixturevalue("workers")
    return request.getfixturevalue("orchestrator")  # type: ignore[no-any-return]


@pytest.fixture
def raw_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()
