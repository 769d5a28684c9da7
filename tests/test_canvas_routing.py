# mypy: disable-error-code="untyped-decorator"
# (Celery's ``shared_task`` is untyped; the tasks keep their own signatures' types.)
"""Celery's canvas beside Baton: ``chunks``, ``starmap``, ``group`` and ``chord`` of plain
Celery tasks run on a ``baton worker``. Celery's own tasks (``celery.starmap``,
``celery.chord_unlock``, ...) go to the control queue, which every worker consumes.

The plain tasks are defined here (named after an agent, ``testkit``, as a plain task is
routed by its name like any other): the worker of these tests imports this module beside
``tests.agents`` (``BATON_AGENT_MODULES``). It runs on a Redis of its own, so that it is
the one worker consuming the control queue (the session's workers do not know these
tasks).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery, chord, group, shared_task

from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.flow.broker import producer_app
from orchestration.model.names import CONTROL_QUEUE
from orchestration.settings import BatonSettings

ROOT = Path(__file__).resolve().parents[1]
RESULT_SECONDS = 60  # the most a result may take before the test fails (it never hangs)


# Plain Celery tasks beside Baton's: routed by name as every task is, so named after an
# agent (``testkit``) they run on that agent's workers.
@shared_task(name="testkit.canvas_add")
def add(x: int, y: int) -> int:
    return x + y


@shared_task(name="testkit.canvas_total")
def total(values: list[int | list[int]]) -> int:
    """The sum of a chord's results (a chunk's: a list)."""
    return sum(sum(v) if isinstance(v, list) else v for v in values)


@pytest.fixture(scope="module")
def canvas_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Celery]:
    """A client app on a Redis of its own, and one ``baton worker`` that imports this
    module (with the control queue, as every worker has unless told otherwise)."""
    base = tmp_path_factory.mktemp("canvas")
    server = RedisServer(base / "redis").start()
    settings = BatonSettings(redis_url=server.url, broker_url=None, home=base / "home")
    app = producer_app(server.url, settings)
    env = {
        "BATON_AGENT_MODULES": "tests.agents,tests.test_canvas_routing",
        "BATON_HOME": str(base / "home"),
        "BATON_BROKER_URL": server.url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    pool = LocalWorkers(server.url, [["testkit"]], concurrency=2, env=env, log_dir=base / "logs")
    try:
        pool.start(app)
        yield app
    finally:
        pool.stop()
        app.close()
        server.stop()


def queue_of(app: Celery, name: str) -> str:
    return app.amqp.router.route({}, name)["queue"].name  # type: ignore[no-any-return]


def test_celery_own_tasks_go_to_the_control_queue(canvas_app: Celery) -> None:
    for name in ("celery.chunks", "celery.starmap", "celery.map", "celery.chord_unlock",
                 "celery.chord", "celery.group", "celery.chain", "celery.accumulate"):  # fmt: skip
        assert queue_of(canvas_app, name) == CONTROL_QUEUE, name
    # An agent's task still goes to its agent's queue, the engine's to control.
    assert queue_of(canvas_app, "testkit.echo") == "agent.testkit"
    assert queue_of(canvas_app, "testkit.canvas_add") == "agent.testkit"
    assert queue_of(canvas_app, "baton.wait") == CONTROL_QUEUE


def test_chunks_and_starmap_of_a_plain_task_run_on_a_baton_worker(canvas_app: Celery) -> None:
    task = canvas_app.tasks["testkit.canvas_add"]
    chunked = task.chunks(zip(range(10), range(10), strict=True), 3).apply_async()
    assert chunked.get(timeout=RESULT_SECONDS) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]

    starred = task.starmap([(1, 2), (3, 4)]).apply_async()
    assert starred.get(timeout=RESULT_SECONDS) == [3, 7]


def test_group_and_chord_of_plain_tasks_run_on_a_baton_worker(canvas_app: Celery) -> None:
    add_, total_ = canvas_app.tasks["testkit.canvas_add"], canvas_app.tasks["testkit.canvas_total"]
    together = group(add_.s(i, i) for i in range(4)).apply_async()
    assert together.get(timeout=RESULT_SECONDS) == [0, 2, 4, 6]

    summed = chord((add_.s(i, 1) for i in range(4)), total_.s()).apply_async()
    assert summed.get(timeout=RESULT_SECONDS) == 10
    # A chord over chunks: the header's messages are Celery's own (celery.starmap).
    chunked = chord(add_.chunks([(i, i) for i in range(6)], 2).group(), total_.s())
    assert chunked.apply_async().get(timeout=RESULT_SECONDS) == 30
