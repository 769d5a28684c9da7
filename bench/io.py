"""Agents that wait on the outside world: I/O-bound concurrency, a global rate limit, and
streamed output, each on Baton and on bare Celery side by side.

The outside world is ``workers/llm_loopback.py``, the OpenAI-compatible chat API on
loopback, in a process of its own (started by ``tests/llm_server.py``'s harness): it
answers after ``delay`` seconds, refuses (429) beyond a quota per key in any sliding
second, and counts what it saw (the most accepted in any second, the most in flight).
Worker sessions are started here, one at a time, with the pools each scenario names;
Redis is flushed after each. A group or chord whose result has not come within
``GROUP_SECONDS`` is lost: that scenario's figure is left out of its repeat (``None``),
the run is counted in ``lost``, and the bench goes on.

1. **Concurrency**: ``calls`` chat calls as one parallel group (Baton: ONE worker process,
   ``--pool asyncio --concurrency 1000``, the async ``bench_io.chat``) or one chord
   (Celery: ONE worker, ``--pool threads --concurrency 100``; and, for the record, prefork
   with 2 processes on fewer calls). Also the same calls with the same client code and no
   engine at all (``asyncio.gather`` in this process): the floor of the client and server.
2. **Limit**: ``limit_calls`` calls under a 20/s limit against a server whose quota is
   20/s per key. Baton: ``bench_io.chat_limited`` (``rate_limit="20/s"`` per key, kept in
   Redis) on 3 asyncio worker processes; Celery: ``rate_limit="20/s"`` on the task, which
   each of its 3 worker processes applies on its own. Figures: the most requests the API
   received in any 1 s (from the send times the calls return: the server's own count is
   of accepted calls only), its 429s, and the run's time against ``limit_calls / 20`` s.
3. **Stream**: a step emits ``emits`` values ``emit_gap_ms`` apart, each with the time it
   was emitted; this process reads them (Baton: ``orchestrator.stream``; Celery: polls
   ``AsyncResult(id).info`` every ``poll_ms`` for ``update_state(PROGRESS)``) and records
   arrival - emit time.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import chord, group
from celery.result import AsyncResult

from bench import agents as bench_agents
from bench.scenarios import _children, _cpu_seconds, pct
from bench.sides import GROUP_SECONDS, BareSide, BatonSide, Workdir, counted
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers
from tests.llm_server import LLMServer

KEY = "sk-bench"
PROMPT = "Summarise: 3 apples, 5 pears and 7 plums."
LIMIT_PER_S = 20  # bench_io.chat_limited's and bare.chat_limited's rate, the server's quota
Log = Callable[[str], None]
Repeats = list[dict[str, Any] | None]  # a scenario's figures per repeat; None: lost


@dataclass(frozen=True)
class IOSizes:
    """How much of each I/O scenario to run; ``quick()`` is for the smoke test."""

    calls: int = 1000
    delay: float = 1.0  # the API's answer time (s)
    aio_concurrency: int = 1000  # Baton: steps at once in its one asyncio worker
    threads: int = 100  # Celery: threads of its one worker
    prefork_calls: int = 40  # Celery prefork: 2 processes, so 40 calls take ~20 s
    prefork: int = 2
    warmup: int = 20  # calls before each timed run (connections, threads, clients)
    limit_calls: int = 400
    limit_delay: float = 0.1
    limit_workers: int = 3
    limit_aio_concurrency: int = 50  # each Baton worker's asyncio pool
    limit_threads: int = 10  # each Celery worker's thread pool
    emits: int = 200
    emit_gap_ms: float = 5.0
    poll_ms: float = 5.0
    repeats: int = 3  # concurrency and stream
    limit_repeats: int = 2  # ~20 s per side each

    @classmethod
    def quick(cls) -> IOSizes:
        return cls(
            calls=50,
            delay=0.2,
            aio_concurrency=100,
            threads=10,
            prefork_calls=4,
            warmup=4,
            limit_calls=40,
            emits=20,
            repeats=1,
            limit_repeats=1,
        )

    def with_repeats(self, n: int) -> IOSizes:
        """``--repeats n``: concurrency and stream n times, the limit at most twice."""
        return IOSizes(**{**asdict(self), "repeats": n, "limit_repeats": min(n, 2)})


def _status_mb(pid: int, field_name: str) -> float:
    """A ``/proc/<pid>/status`` memory field (``VmHWM``: peak RSS) in MB; 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class BatonIO(BatonSide):
    """Baton with the I/O agent's workers: ``groups`` processes, ``pool`` x ``concurrency``."""

    groups: list[list[str]] = field(default_factory=lambda: [["bench_io"]])
    concurrency: int = 1000
    pool: str = "asyncio"

    def start(self) -> None:
        self.orch = WorkflowOrchestrator(
            self.work.redis_url, settings=self.settings(), local_workers=False
        )
        self.workers = LocalWorkers(
            self.work.redis_url,
            self.groups,
            concurrency=self.concurrency,
            pool=self.pool,
            env=self.work.env(self.extra_env),
            log_dir=self.work.root / "logs",
        ).start(self.orch.app)


@dataclass
class BareIO(BareSide):
    """Bare Celery with ``processes`` workers of ``pool`` x ``concurrency``; the result
    backend is the same private Redis (chords and ``update_state`` need one)."""

    pool: str = "threads"
    concurrency: int = 100
    processes: int = 1

    def start(self) -> None:
        from bench.bare import QUEUE, make_app

        self.client = redis.Redis.from_url(self.work.redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.app = make_app(self.work.redis_url, BatonSide(self.work, self.extra_env).settings())
        self.app.backend.on_task_call = lambda *args, **kwargs: None  # as BareSide
        env = {**os.environ, **self.work.env(self.extra_env)}
        log_dir = self.work.root / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.workers = LocalWorkers(self.work.redis_url, [], log_dir=log_dir)
        for i in range(self.processes):
            name = f"bare-{self.pool}{i}.{os.getpid()}@{socket.gethostname()}"
            cmd = [sys.executable, "-m", "celery", "-A", "bench.bare", "worker", "-Q", QUEUE]
            cmd += ["-c", str(self.concurrency), "-P", self.pool, "-n", name, "-l", "INFO", "-E"]
            self.workers.spawn(cmd, name, env)
        self.workers.wait_ready(self.app, 90)


def _chat_member(url: str, task: str = "chat") -> dict[str, Any]:
    params = {"url": url, "key": KEY, "prompt": PROMPT}
    return {"agent_id": "bench_io", "task_type": task, "parameters": params}


def _baton_group(side: BatonIO, url: str, n: int, task: str = "chat") -> float:
    members = [_chat_member(url, task) for _ in range(n)]
    flow = {"name": f"io{n}", "steps": [{"parallel": members, "output_key": "answers"}]}
    return side._run(flow, GROUP_SECONDS).latency


def _bare_chord(side: BareIO, url: str, n: int, task: str = "chat") -> float:
    header = group(side._task(task).si(url=url, key=KEY, prompt=PROMPT) for _ in range(n))
    return side._run(chord(header, side._task("collect").s()), timeout=GROUP_SECONDS).latency


def _served(api: LLMServer, n: int, what: str, *, refusals: bool = False) -> dict[str, Any]:
    """The server's counts for the key since its last reset; every call must have got
    there (and, unless ``refusals``, been answered)."""
    st: dict[str, Any] = api.stats()["keys"][KEY]
    if st["requests"] != n or (not refusals and st["accepted"] != n):
        raise RuntimeError(f"{what}: the API saw {st['requests']} requests for {n} calls: {st}")
    return st


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes and their children."""
    return sum(_cpu_seconds(p) for pid in pids for p in (pid, *_children(pid)))


def _concurrency_result(
    wall: float, n: int, st: dict[str, Any], cpu: float, api_cpu: float, rss: float = 0.0
) -> dict[str, Any]:
    return {
        "calls": n,
        "wall_s": wall,
        "per_s": n / wall,
        "max_in_flight": st["max_in_flight"],
        "rss_peak_mb": rss,
        "cpu_s": cpu,  # the worker process(es), or this process with no engine
        "api_cpu_s": api_cpu,  # the API server's process
    }


def _api_pid(api: LLMServer) -> int:
    assert api.proc is not None
    return api.proc.pid


def baton_concurrency(side: BatonIO, api: LLMServer, sz: IOSizes) -> dict[str, Any]:
    assert side.workers
    pids = side.pids()
    _baton_group(side, api.url, sz.warmup)
    api.reset()
    cpu0, api0 = _cpu(pids), _cpu([_api_pid(api)])
    wall = _baton_group(side, api.url, sz.calls)
    cpu, api_cpu = _cpu(pids) - cpu0, _cpu([_api_pid(api)]) - api0
    st = _served(api, sz.calls, "baton")
    rss = _status_mb(pids[0], "VmHWM")  # the asyncio pool: all in the one process
    return _concurrency_result(wall, sz.calls, st, cpu, api_cpu, rss)


def bare_concurrency(side: BareIO, api: LLMServer, n: int, warmup: int) -> dict[str, Any]:
    pids = side.pids()
    _bare_chord(side, api.url, warmup)
    api.reset()
    cpu0, api0 = _cpu(pids), _cpu([_api_pid(api)])
    wall = _bare_chord(side, api.url, n)
    cpu, api_cpu = _cpu(pids) - cpu0, _cpu([_api_pid(api)]) - api0
    st = _served(api, n, f"celery {side.pool}")
    rss = _status_mb(pids[0], "VmHWM") if side.pool == "threads" else 0.0  # (one process)
    return _concurrency_result(wall, n, st, cpu, api_cpu, rss)


def floor(api: LLMServer, sz: IOSizes) -> dict[str, Any]:
    """The same calls with the same client code, all at once, in this process: no engine."""

    async def run() -> tuple[float, float, float]:  # (asyncio.run closes the session)
        calls = (bench_agents.chat_call(api.url, KEY, PROMPT) for _ in range(sz.warmup))
        await asyncio.gather(*calls)
        api.reset()
        cpu0, api0 = time.process_time(), _cpu([_api_pid(api)])
        t0 = time.perf_counter()
        await asyncio.gather(
            *(bench_agents.chat_call(api.url, KEY, PROMPT) for _ in range(sz.calls))
        )
        wall = time.perf_counter() - t0
        return wall, time.process_time() - cpu0, _cpu([_api_pid(api)]) - api0

    wall, cpu, api_cpu = asyncio.run(run())
    st = _served(api, sz.calls, "no engine")
    return _concurrency_result(wall, sz.calls, st, cpu, api_cpu)


def _latencies(ms: list[float], emitted: int) -> dict[str, Any]:
    if not ms:
        raise RuntimeError("the reader saw none of the emitted values")
    return {
        "emitted": emitted,
        "seen": len(ms),
        "median_ms": statistics.median(ms),
        "p95_ms": pct(ms, 0.95),
        "max_ms": max(ms),
    }


def baton_stream(side: BatonIO, sz: IOSizes) -> dict[str, Any]:
    """Arrival (here) - emit time (in the worker) of each ``emitted`` event read from
    ``orchestrator.stream`` while the step runs."""
    assert side.orch
    orch = side.orch

    def once(count: int) -> list[float]:
        params = {"count": count, "gap_ms": sz.emit_gap_ms}
        step = {"agent_id": "bench_io", "task_type": "emit_timed", "parameters": params}
        wid = orch.run_workflow({"name": "stream", "steps": [{**step, "output_key": "out"}]})
        ms: list[float] = []
        for event in orch.stream(wid, timeout=120):
            now = time.time()
            if event.event == "emitted":
                ms.append((now - event.data["t"]) * 1000)
        if (ctx := orch.wait(wid, timeout=60)).status != "completed":
            raise RuntimeError(f"stream workflow {wid} ended {ctx.status}: {ctx.error}")
        return ms

    once(5)  # warm-up: the worker's event-writer thread, this process's connections
    return _latencies(once(sz.emits), sz.emits)


def bare_stream(side: BareIO, sz: IOSizes) -> dict[str, Any]:
    """The Celery way: ``update_state(state="PROGRESS", meta=...)`` in the task, read by
    polling ``AsyncResult(id).info`` every ``poll_ms``; a value overwritten between two
    polls is never seen."""
    assert side.app

    def once(count: int) -> list[float]:
        kwargs = {"count": count, "gap_ms": sz.emit_gap_ms}
        task_id = side._task("emit_progress").apply_async(kwargs=kwargs).id
        res = AsyncResult(task_id, app=side.app)
        ms: list[float] = []
        last = -1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = res.info  # one GET: the PROGRESS meta, or (ended) the return value
            now = time.time()
            if isinstance(info, dict) and "i" in info:
                if info["i"] != last:
                    last = info["i"]
                    ms.append((now - info["t"]) * 1000)
            elif isinstance(info, BaseException) or (isinstance(info, dict) and "emitted" in info):
                break
            time.sleep(sz.poll_ms / 1000)
        else:
            raise TimeoutError(f"celery task {task_id} did not end")
        if res.state != "SUCCESS":
            raise RuntimeError(f"celery task {task_id} ended {res.state}")
        return ms

    once(5)
    return _latencies(once(sz.emits), sz.emits)


def most_in_window(times: list[float], window: float = 1.0) -> int:
    """The most of the sorted ``times`` in any ``[t, t + window)`` (the API's own count)."""
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def _limit_result(wall: float, sent: list[float], st: dict[str, Any]) -> dict[str, Any]:
    n, at = len(sent), st["accepted_at"]
    ideal = n / LIMIT_PER_S
    gaps = [b - a for a, b in zip(sent, sent[1:], strict=False)]
    return {
        "calls": n,
        "wall_s": wall,
        "ideal_s": ideal,
        "off_ideal": wall / ideal - 1,
        # Requests the API received in any 1 s, refused ones included (their send times,
        # taken by the callers on this machine's clock): the server counts only accepted
        # ones in time, and those never exceed its quota.
        "max_sent_per_second": most_in_window(sent),
        "max_per_second": st["max_per_second"],
        "rejected_429": st["rejected_429"],
        "accepted": st["accepted"],
        "span_s": at[-1] - at[0] if len(at) > 1 else 0.0,
        # Sends closer than half the limit's interval to the one before: bunching.
        "close_sends": sum(1 for g in gaps if g < 0.5 / LIMIT_PER_S),
    }


def _limit_warmup(api: LLMServer, run: Callable[[int], object], n: int) -> None:
    """A few unlimited calls (each worker's connections and clients), then a quiet second
    so that the server's window is empty, and its counts cleared."""
    run(n)
    time.sleep(1.1)
    api.reset()


def baton_limit(side: BatonIO, api: LLMServer, sz: IOSizes) -> dict[str, Any]:
    assert side.orch
    orch = side.orch
    _limit_warmup(api, lambda n: _baton_group(side, api.url, n), 3 * sz.limit_workers)
    members = [_chat_member(api.url, "chat_limited") for _ in range(sz.limit_calls)]
    t0 = time.perf_counter()
    wid = orch.run_workflow({"name": "limit", "steps": [{"parallel": members, "output_key": "a"}]})
    ctx = side.wait(wid, GROUP_SECONDS)
    wall = time.perf_counter() - t0
    done = [r.result for r in ctx.task_results.values() if r.task_type == "chat_limited"]
    st = _served(api, sz.limit_calls, "baton limit", refusals=True)
    return _limit_result(wall, sorted(r["sent"] for r in done), st)


def bare_limit(side: BareIO, api: LLMServer, sz: IOSizes) -> dict[str, Any]:
    _limit_warmup(api, lambda n: _bare_chord(side, api.url, n), 3 * sz.limit_workers)
    task = side._task("chat_limited")
    header = group(task.si(url=api.url, key=KEY, prompt=PROMPT) for _ in range(sz.limit_calls))
    t0 = time.perf_counter()  # timed as BareSide._run: apply_async to the callback's result
    res = chord(header, side._task("collect_sent").s()).apply_async()
    meta = side.result(res.id, timeout=GROUP_SECONDS)
    wall = time.perf_counter() - t0
    st = _served(api, sz.limit_calls, "celery limit", refusals=True)
    return _limit_result(wall, meta["result"]["sent"], st)


def run(work: Workdir, r: redis.Redis[bytes], sz: IOSizes, log: Log) -> dict[str, Any]:
    """Every I/O scenario, each side in worker sessions of its own; the raw figures."""
    conc: dict[str, Repeats] = {"baton": [], "threads": [], "prefork": [], "floor": []}
    stream: dict[str, Repeats] = {"baton": [], "celery": []}
    limit: dict[str, Repeats] = {"baton": [], "celery": []}
    lost: list[dict[str, Any]] = []

    def keep(into: Repeats, side: str, scenario: str, fn: Callable[[], Any]) -> None:
        """``fn()``'s figures into ``into``; ``None`` there if its group or chord is lost."""
        into.append(counted(lost, side, scenario, GROUP_SECONDS, fn, log))

    def session(what: str, side: Any, work_fn: Callable[[Any], None]) -> None:
        t0 = time.perf_counter()
        side.start()
        try:
            work_fn(side)
        finally:
            side.stop()
            r.flushall()
        log(f"  {what}: {time.perf_counter() - t0:.1f}s")

    with LLMServer((KEY,), quota_per_second=1e9, delay=sz.delay) as api:

        def on_baton(side: BatonIO) -> None:
            keep(
                conc["baton"], "baton", "8a. concurrency", lambda: baton_concurrency(side, api, sz)
            )
            stream["baton"].append(baton_stream(side, sz))

        def on_threads(side: BareIO) -> None:
            keep(
                conc["threads"],
                "celery threads",
                "8a. concurrency",
                lambda: bare_concurrency(side, api, sz.calls, sz.warmup),
            )
            stream["celery"].append(bare_stream(side, sz))

        def on_prefork(side: BareIO) -> None:
            keep(
                conc["prefork"],
                "celery prefork",
                "8a. concurrency",
                lambda: bare_concurrency(side, api, sz.prefork_calls, sz.prefork),
            )

        for rep in range(sz.repeats):
            log(f"io repeat {rep + 1}/{sz.repeats}")
            baton = BatonIO(work, concurrency=sz.aio_concurrency)
            threads = BareIO(work, concurrency=sz.threads)
            prefork = BareIO(work, pool="prefork", concurrency=sz.prefork)
            sessions: list[tuple[str, Any, Callable[[Any], None]]] = [
                ("baton asyncio: concurrency + stream", baton, on_baton),
                ("celery threads: concurrency + stream", threads, on_threads),
                ("celery prefork: concurrency", prefork, on_prefork),
            ]
            for what, side, fn in sessions if rep % 2 == 0 else sessions[::-1]:
                session(what, side, fn)
            t0 = time.perf_counter()
            conc["floor"].append(floor(api, sz))
            log(f"  no engine: {time.perf_counter() - t0:.1f}s")

    with LLMServer((KEY,), quota_per_second=LIMIT_PER_S, delay=sz.limit_delay) as api:

        def on_baton_limit(side: BatonIO) -> None:
            keep(limit["baton"], "baton", "8b. limit", lambda: baton_limit(side, api, sz))

        def on_bare_limit(side: BareIO) -> None:
            keep(limit["celery"], "celery threads", "8b. limit", lambda: bare_limit(side, api, sz))

        for rep in range(sz.limit_repeats):
            log(f"limit repeat {rep + 1}/{sz.limit_repeats}")
            baton = BatonIO(
                work, groups=[["bench_io"]] * sz.limit_workers, concurrency=sz.limit_aio_concurrency
            )
            bare = BareIO(work, concurrency=sz.limit_threads, processes=sz.limit_workers)
            limited: list[tuple[str, Any, Callable[[Any], None]]] = [
                ("baton limit", baton, on_baton_limit),
                ("celery limit", bare, on_bare_limit),
            ]
            for what, side, fn in limited if rep % 2 == 0 else limited[::-1]:
                session(what, side, fn)

    figures = {"concurrency": conc, "stream": stream, "limit": limit}
    return {"sizes": asdict(sz), **figures, "lost": lost}
