"""Bad input and secure defaults, on a password-protected Redis of its own.

Malformed messages go straight onto an agent queue; definitions come from a fuzzer;
outputs are too big. Each is refused with its reason, the worker stays up, and other
workflows are unaffected. Everything runs with a password on Redis, end to end.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection, Producer

from orchestration import DefinitionError, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.settings import BatonSettings
from tests.conftest import ROOT
from tests.helpers import eventually, step

PASSWORD = f"pw-{uuid.uuid4().hex}"


@dataclass
class Secured:
    server: RedisServer
    orch: WorkflowOrchestrator
    workers: LocalWorkers
    log: Path


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, worker_env: dict[str, str]
) -> Iterator[Secured]:
    home = tmp_path_factory.mktemp("secured")
    server = RedisServer(home / "redis", password=PASSWORD).start()
    env = {
        **worker_env,
        "BATON_REDIS_URL": server.url,
        "BATON_HOME": str(home),
        "BATON_KEY_PREFIX": "secured",
        "BATON_MAX_OUTPUT_BYTES": str(2**20),
        "PYTHONPATH": str(ROOT),
    }
    settings_ = BatonSettings(
        redis_url=server.url, key_prefix="secured", home=home, agent_modules=["tests.agents"]
    )
    orch = WorkflowOrchestrator(server.url, settings=settings_, local_workers=False)
    every = [a.agent_id for a in orch.registry if a.agent_id not in ("slowapi", "solo")]
    workers = LocalWorkers(server.url, [every], concurrency=2, env=env, log_dir=home / "logs")
    workers.start(orch.app)
    yield Secured(server, orch, workers, next((home / "logs").glob("worker-*.log")))
    workers.stop()
    orch.close()
    server.stop()


def test_a_password_protected_redis_works_end_to_end_and_the_password_is_never_logged(
    secured: Secured,
) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=secured.server.port).ping()  # the server really wants a password
    ctx = secured.orch.wait(
        secured.orch.run_workflow(
            {
                "steps": [
                    step("echo", "a", value=1),
                    {"parallel": [step("echo", "m1"), step("echo", "m2")]},
                ]
            }
        ),
        timeout=60,
    )

    assert ctx.status == WorkflowStatus.COMPLETED
    assert PASSWORD not in secured.log.read_text()


def publish(secured: Secured, body: Any, *, task: str = "testkit.echo", **kw: Any) -> None:
    headers = {
        "task": task,
        "id": str(uuid.uuid4()),
        "lang": "py",
        "argsrepr": "",
        "kwargsrepr": "",
    }
    with Connection(secured.server.url) as conn:
        Producer(conn).publish(
            body, routing_key="agent.testkit", exchange="", headers=headers, **kw
        )


def test_malformed_messages_are_refused_and_the_worker_stays_up(
    secured: Secured, raw_redis: redis.Redis
) -> None:
    # When: garbage of every kind lands on an agent queue...
    publish(secured, b"{not json", content_type="application/json", content_encoding="utf-8")
    publish(secured, [["only-one-arg"], {}, {}], serializer="json")  # wrong schema
    publish(secured, [["w", "s", 1], {}, {}], task="nobody.nothing", serializer="json")
    publish(
        secured,
        pickle.dumps([["w", "step_1", 1], {}, {}]),
        content_type="application/x-python-serialize",
        content_encoding="binary",
    )
    publish(secured, [["w", "step_1", 1, "x" * 50 * 2**20], {}, {}], serializer="json")  # 50 MB
    client = redis.Redis.from_url(secured.server.url)
    client.lpush("agent.testkit", b"\x00\xff not even an envelope")
    for junk in (b"[1, 2, 3]", b'"a string"', b"42", b"null", b"{}", b'{"properties": 1}'):
        client.lpush("agent.testkit", junk)  # JSON, but no envelope

    # Then: each is logged with its reason, nothing took the worker down...
    log = secured.log
    reasons = [
        "Refusing to deserialize untrusted content of type pickle",
        "Received unregistered task of type 'nobody.nothing'",
        "missing 1 required positional argument",
        "positional arguments but 5 were given",
        "not a message envelope: JSON list without envelope properties",
        "not a message envelope: JSON NoneType without envelope properties",
        "not a message envelope: JSON object without envelope properties",
    ]
    eventually(
        lambda: all(r in log.read_text() for r in reasons), 60, f"the refusals in {log}: {reasons}"
    )
    assert all(p.poll() is None for p in secured.workers.processes)
    # ...and other workflows are unaffected.
    ctx = secured.orch.wait(
        secured.orch.run_workflow({"steps": [step("echo", "after", value=2)]}), 60
    )
    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["after"]["value"] == 2


def test_an_oversized_output_fails_its_step_with_a_clear_limit(secured: Secured) -> None:
    ctx = secured.orch.wait(
        secured.orch.run_workflow(
            {"steps": [step("payload", "blob", size=3 * 2**20), step("echo", "next")]}
        ),
        timeout=60,
    )

    assert ctx.status == WorkflowStatus.FAILED
    assert ctx.error is not None
    assert (
        "output of step_1 is 3.0 MiB, over the limit of 1.0 MiB (BATON_MAX_OUTPUT_BYTES)"
        in ctx.error
    )
    assert "blob" not in ctx.shared_data


AGENTS = st.sampled_from(["testkit", "analyzer", "nobody", "data_processor", ""])
TASKS = st.sampled_from(["echo", "payload", "fail", "trend_analysis", "extract_data", "fly", ""])
PARAMS = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"value": st.integers()}),
    st.fixed_dictionaries({"size": st.one_of(st.integers(0, 64), st.text(max_size=3))}),
    st.lists(st.integers(), max_size=2),
)
TASK_STEP = st.fixed_dictionaries(
    {"agent_id": AGENTS, "task_type": TASKS},
    optional={
        "output_key": st.sampled_from(["a", "b", "c", ""]),
        "parameters": PARAMS,
        "retries": st.integers(-1, 2),
        "bogus": st.just(1),
    },
)
STEP = st.one_of(
    TASK_STEP,
    st.fixed_dictionaries(
        {"parallel": st.lists(st.one_of(TASK_STEP, st.lists(TASK_STEP, max_size=2)), max_size=3)},
        optional={
            "aggregate": st.sampled_from(["summary", "merge", "median"]),
            "min_success_rate": st.floats(-1, 2),
        },
    ),
)
DEFINITION = st.fixed_dictionaries(
    {"steps": st.lists(STEP, max_size=4)}, optional={"name": st.text(max_size=5)}
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,  # (no .hypothesis/ in the checkout: tests write only to temp dirs)
)
@given(definition=DEFINITION)
def test_fuzzed_definitions_are_either_run_or_refused_never_half_written(
    secured: Secured, definition: dict[str, Any]
) -> None:
    store = secured.orch.store
    before = set(store.redis.scan_iter("secured:wf:*", count=1000))
    try:
        wid = secured.orch.run_workflow(definition)
    except DefinitionError as err:
        assert err.problems and all(isinstance(w, str) and m for w, m in err.problems)
        assert set(store.redis.scan_iter("secured:wf:*", count=1000)) == before  # nothing written
        return
    ctx = secured.orch.wait(wid, timeout=60)
    assert ctx.status in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED)
    assert ctx.current_step <= ctx.total_steps
