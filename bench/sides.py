"""The two sides under test, with one interface: Baton workflows and bare Celery canvases.

Each side owns its worker processes (prefork, concurrency 2, the same Celery settings)
and offers the same operations; the scenarios time them identically.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import redis
from celery import Celery, chain, chord, group
from celery.result import AsyncResult
from celery.states import READY_STATES as READY

from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers
from orchestration.errors import WorkflowTimeout
from orchestration.settings import BatonSettings

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 2
PREFIX = "bench"
#: The most the bench waits for one run's results (a chain, a chord, a workflow, or a
#: batch of them submitted at once): what has not come by then is lost, counted as such,
#: and the bench goes on. ``BENCH_RUN_SECONDS`` overrides it.
RUN_SECONDS = float(os.environ.get("BENCH_RUN_SECONDS", "300"))
#: The most one big group or chord is waited for (a fan-out of 1,000, section 8's 1,000
#: calls): lost past it, as a run past ``RUN_SECONDS``.
GROUP_SECONDS = 600.0
T = TypeVar("T")


class Lost(TimeoutError):
    """A run whose result did not come within its bound (a chain that never finishes)."""


def gather(handles: list[T], wait: Any, bound: float) -> int:
    """Wait for every handle of one run with ``wait(handle, seconds)``, one deadline for
    them all: how many were lost (``wait`` raised :class:`Lost`). Those that came after
    the deadline are still found (a wait of 0 looks once)."""
    deadline = time.monotonic() + bound
    lost = 0
    for handle in handles:
        try:
            wait(handle, max(0.0, deadline - time.monotonic()))
        except Lost:
            lost += 1
    return lost


def counted(
    lost: list[dict[str, Any]],
    side: str,
    scenario: str,
    bound: float,
    run: Callable[[], T],
    log: Callable[[str], None] | None = None,
) -> T | None:
    """``run()``'s figures; ``None`` if its result did not come within ``bound`` (it raised
    :class:`Lost`): recorded in ``lost`` as ``{side, scenario, bound_s}`` (the report's
    *Lost runs*), and the bench goes on."""
    try:
        return run()
    except Lost as exc:
        lost.append({"side": side, "scenario": scenario, "bound_s": bound})
        if log:
            log(f"  {side} {scenario}: lost ({exc})")
        return None


def ts(iso: str) -> float:
    """Epoch seconds of an ISO timestamp written by a worker (Baton or Celery)."""
    return datetime.fromisoformat(iso).timestamp()


@dataclass
class Run:
    """One timed run: wall latency, and the server-side timestamps needed for breakdowns."""

    latency: float
    finished_at: float = 0.0  # last step's commit (Baton) / last result stored (Celery)
    returned_at: float = 0.0  # when the client's wait returned (epoch)
    first_done_at: float = 0.0  # the first step's commit / result


@dataclass
class Workdir:
    """Where a session keeps worker logs, the message log and profiles."""

    root: Path
    redis_url: str

    @property
    def msglog(self) -> Path:
        return self.root / "msglog"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment of every worker process: same for both sides."""
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {
            "PYTHONPATH": path,
            "BATON_REDIS_URL": self.redis_url,
            "BATON_AGENT_MODULES": "bench.agents",
            "BATON_KEY_PREFIX": PREFIX,
            "BATON_HOME": str(self.root / "home"),
            "BENCH_MSG_LOG": str(self.msglog),
            **(extra or {}),
        }


class Side(Protocol):
    name: str
    lost: int  # runs (or a batch's members) whose results never came within the bound

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def sequential(self, steps: int) -> Run: ...
    def payload(self, steps: int, size: int) -> Run: ...
    def fanout(self, size: int) -> Run: ...
    def handoff(self, steps: int, size: int) -> Run: ...
    def submit_many(self, n: int, steps: int) -> list[Any]: ...
    def wait_all(self, handles: list[Any]) -> int: ...  # how many were lost
    def pids(self) -> list[int]: ...


def _noop_steps(steps: int) -> list[dict[str, Any]]:
    return [
        {"agent_id": "bench", "task_type": "noop", "output_key": f"s{i}"}
        for i in range(1, steps + 1)
    ]


class _WorkerPids:
    workers: LocalWorkers | None

    def pids(self) -> list[int]:
        """The side's worker processes (their consumer parents; pool children are theirs)."""
        assert self.workers
        return [p.pid for p in self.workers.processes]


@dataclass
class BatonSide(_WorkerPids):
    """Baton: ``run_workflow()`` then ``wait()``, workers from ``LocalWorkers``."""

    work: Workdir
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = "baton"
    orch: WorkflowOrchestrator | None = None
    workers: LocalWorkers | None = None
    bound: float = RUN_SECONDS  # the most one run is waited for
    lost: int = 0

    def wait(self, wid: str, timeout: float) -> Any:
        """The workflow's end; :class:`Lost` if it has not ended within ``timeout``."""
        assert self.orch
        try:
            ctx = self.orch.wait(wid, timeout=timeout)
        except WorkflowTimeout as exc:
            raise Lost(str(exc)) from None
        if ctx.status != "completed":
            raise RuntimeError(f"baton workflow {wid} ended {ctx.status}: {ctx.error}")
        return ctx

    def settings(self) -> BatonSettings:
        env = self.work.env(self.extra_env)
        return BatonSettings(
            redis_url=self.work.redis_url,
            key_prefix=PREFIX,
            home=Path(env["BATON_HOME"]),
            agent_modules=["bench.agents"],
            retention_seconds=int(env.get("BATON_RETENTION_SECONDS", 7 * 24 * 3600)),
            result_expires=int(env.get("BATON_RESULT_EXPIRES", 24 * 3600)),
        )

    def start(self) -> None:
        self.orch = WorkflowOrchestrator(
            self.work.redis_url, settings=self.settings(), local_workers=False
        )
        self.workers = LocalWorkers(
            self.work.redis_url,
            [["bench"]],
            concurrency=CONCURRENCY,
            env=self.work.env(self.extra_env),
            log_dir=self.work.root / "logs",
        ).start(self.orch.app)

    def stop(self) -> None:
        if self.workers:
            self.workers.stop()
        if self.orch:
            self.orch.close()
        self.workers = self.orch = None

    def _run(self, definition: dict[str, Any], timeout: float | None = None) -> Run:
        assert self.orch
        t0 = time.perf_counter()
        wid = self.orch.run_workflow(definition)
        ctx = self.wait(wid, self.bound if timeout is None else timeout)
        latency = time.perf_counter() - t0
        returned = time.time()
        first = next(h for h in ctx.execution_history if h.event == "step_completed")
        return Run(latency, ts(ctx.finished_at or ""), returned, ts(first.timestamp))

    def sequential(self, steps: int) -> Run:
        return self._run({"name": "seq", "steps": _noop_steps(steps)})

    def payload(self, steps: int, size: int) -> Run:
        defs: list[dict[str, Any]] = []
        for i in range(1, steps + 1):
            params: dict[str, Any] = {"size": size}
            if i > 1:
                params["read"] = f"p{i - 1}"
            defs.append(
                {
                    "agent_id": "bench",
                    "task_type": "payload",
                    "output_key": f"p{i}",
                    "parameters": params,
                }
            )
        return self._run({"name": "payload", "steps": defs})

    def handoff(self, steps: int, size: int) -> Run:
        first = {
            "agent_id": "bench",
            "task_type": "payload",
            "output_key": "blob",
            "parameters": {"size": size},
        }
        return self._run({"name": "handoff", "steps": [first, *_noop_steps(steps)[1:]]})

    def fanout(self, size: int) -> Run:
        members = [{"agent_id": "bench", "task_type": "noop"} for _ in range(size)]
        return self._run(
            {"name": f"fan{size}", "steps": [{"parallel": members, "output_key": "agg"}]},
            GROUP_SECONDS,
        )

    def submit_many(self, n: int, steps: int) -> list[Any]:
        assert self.orch
        definition = {"name": "tp", "steps": _noop_steps(steps)}
        return [self.orch.run_workflow(definition) for _ in range(n)]

    def wait_all(self, handles: list[Any]) -> int:
        lost = gather(handles, self.wait, self.bound)
        self.lost += lost
        return lost


@dataclass
class BareSide(_WorkerPids):
    """Bare Celery: a chain/chord ``apply_async()``, then the final task's result.

    The wait mirrors Baton's ``wait()``: subscribe to the final task's result channel
    (``celery-task-meta-<id>``, where the Redis backend publishes the result), GET it once
    in case it is already there, else block on the subscription. ``AsyncResult.get()``
    does the same in principle, but by default follows parents, fetching each parent's
    state on every wake-up; waiting on the channel directly keeps the two clients' waits
    identical.
    """

    work: Workdir
    extra_env: dict[str, str] = field(default_factory=dict)
    name: str = "celery"
    app: Celery | None = None
    workers: LocalWorkers | None = None
    client: redis.Redis[bytes] | None = None
    pubsub: Any = None
    bound: float = RUN_SECONDS  # the most one run is waited for
    lost: int = 0

    def connect(self) -> None:
        """The client: the app that sends, and the Redis connection ``result`` waits on."""
        from bench.bare import make_app

        self.client = redis.Redis.from_url(self.work.redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        settings = BatonSide(self.work, self.extra_env).settings()
        self.app = make_app(self.work.redis_url, settings)
        # The client's automatic subscription to each sent task's result is never read
        # here (``result()`` waits instead); off, it neither buffers nor costs round trips.
        self.app.backend.on_task_call = lambda *args, **kwargs: None

    def start(self) -> None:
        from bench.bare import QUEUE

        self.connect()
        env = {**os.environ, **self.work.env(self.extra_env)}
        log_dir = self.work.root / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        name = f"bare.{os.getpid()}@{socket.gethostname()}"
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.bare",
            "worker",
            "-Q",
            QUEUE,
            "-c",
            str(CONCURRENCY),
            "-P",
            "prefork",
            "-n",
            name,
            "-l",
            "INFO",
            "-E",
        ]
        # LocalWorkers supplies the ping-based readiness wait and the process-group stop.
        self.workers = LocalWorkers(self.work.redis_url, [], log_dir=log_dir)
        self.workers.spawn(cmd, name, env)
        self.workers.wait_ready(self.app, 90)

    def stop(self) -> None:
        if self.workers:
            self.workers.stop()
        if self.app:
            self.app.close()
        if self.pubsub is not None:
            self.pubsub.close()
        if self.client is not None:
            self.client.close()
        self.workers = self.app = self.client = self.pubsub = None

    def result(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The final task's result meta, woken by the backend's pub/sub message;
        :class:`Lost` if it has not come within ``timeout`` (the side's bound)."""
        assert self.client is not None and self.pubsub is not None
        timeout = self.bound if timeout is None else timeout
        key = f"celery-task-meta-{task_id}"
        self.pubsub.subscribe(key)
        try:
            raw = self.client.get(key)
            deadline = time.monotonic() + timeout
            while raw is None or json.loads(raw)["status"] not in READY:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Lost(f"no result for {task_id} after {timeout:g}s")
                msg = self.pubsub.get_message(timeout=min(1.0, left))
                if msg is not None and msg["channel"].decode() == key:
                    raw = msg["data"]
        finally:
            self.pubsub.unsubscribe(key)
        meta: dict[str, Any] = json.loads(raw)
        if meta["status"] != "SUCCESS":
            raise RuntimeError(f"celery task {task_id} ended {meta['status']}")
        return meta

    def _task(self, name: str) -> Any:
        assert self.app
        return self.app.tasks[f"bare.{name}"]

    def _run(
        self, canvas: Any, first: AsyncResult | None = None, timeout: float | None = None
    ) -> Run:
        t0 = time.perf_counter()
        res = canvas.apply_async()
        meta = self.result(res.id, timeout)
        latency = time.perf_counter() - t0
        returned = time.time()
        done = ts(meta["date_done"])
        node, first_done = res, done
        while isinstance(node.parent, AsyncResult):  # the chain's first task, after timing
            node = node.parent
        if node is not res and not hasattr(node, "results"):
            assert self.client is not None
            first_done = ts(
                json.loads(self.client.get(f"celery-task-meta-{node.id}") or "{}")["date_done"]
            )
        return Run(latency, done, returned, first_done)

    def sequential(self, steps: int) -> Run:
        return self._run(chain(*[self._task("noop").s() for _ in range(steps)]))

    def payload(self, steps: int, size: int) -> Run:
        return self._run(chain(*[self._task("payload").s(size=size) for _ in range(steps)]))

    def handoff(self, steps: int, size: int) -> Run:
        relays = [self._task("relay").s() for _ in range(steps - 1)]
        return self._run(chain(self._task("payload").s(size=size), *relays))

    def fanout(self, size: int) -> Run:
        header = group(self._task("noop").si() for _ in range(size))
        return self._run(chord(header, self._task("collect").s()), timeout=GROUP_SECONDS)

    def submit_many(self, n: int, steps: int) -> list[Any]:
        return [
            chain(*[self._task("noop").s() for _ in range(steps)]).apply_async() for _ in range(n)
        ]

    def wait_all(self, handles: list[Any]) -> int:
        lost = gather([res.id for res in handles], self.result, self.bound)
        self.lost += lost
        return lost
