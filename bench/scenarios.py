"""The measured scenarios. Each takes a started side and returns plain numbers.

Every scenario runs the same operations on either side; what differs is only the side.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import redis

from bench import msglog
from bench.sides import Lost, Run, Side

KB, MB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    """How much of each scenario to run; ``quick()`` is for the smoke test."""

    steps: int = 5
    seq_runs: int = 200
    fanout: tuple[tuple[int, int], ...] = ((10, 5), (100, 3), (1000, 1))  # (members, runs)
    payload_size: int = 100 * KB
    payload_runs: int = 20
    throughput: int = 500
    cost_runs: int = 20
    handoff: tuple[tuple[int, int], ...] = ((KB, 3), (100 * KB, 3), (MB, 2), (10 * MB, 1))
    memory_runs: int = 100
    retention: int = 10  # longer than the memory batch takes, so nothing expires mid-wait
    profile_runs: int = 60
    repeats: int = 5
    idle_window: float = 1.5  # seconds of idle traffic measured before the cost scenario
    single_session: bool = False  # one worker session per side for everything (quick)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            seq_runs=5,
            fanout=((10, 1), (20, 1)),
            payload_size=10 * KB,
            payload_runs=2,
            throughput=10,
            cost_runs=3,
            handoff=((KB, 1), (100 * KB, 1)),
            memory_runs=10,
            retention=2,
            idle_window=0.5,
            single_session=True,
            profile_runs=5,
            repeats=1,
        )


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:  # every run lost
        return math.nan
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: list[float]) -> float:
    """The median; NaN when every run was lost."""
    return statistics.median(values) if values else math.nan


def runs_of(side: Side, run: Callable[[], Run], n: int) -> list[Run]:
    """``n`` runs, those lost (no result within the side's bound) left out and counted on
    the side (``side.lost``): the scenario goes on without them."""
    done: list[Run] = []
    for _ in range(n):
        try:
            done.append(run())
        except Lost:
            side.lost += 1
    return done


def sequential(side: Side, sz: Sizes) -> dict[str, Any]:
    """Scenario 1 (and 7): one 5-step run at a time; latency and the client's wait."""
    runs_of(side, lambda: side.sequential(sz.steps), 1)  # warm-up: connections, the pool
    runs = runs_of(side, lambda: side.sequential(sz.steps), sz.seq_runs)
    lat = [r.latency * 1000 for r in runs]
    wait = [(r.returned_at - r.finished_at) * 1000 for r in runs]
    return {
        "median_ms": median(lat),
        "p95_ms": pct(lat, 0.95),
        "client_wait_ms": median(wait),
        "client_wait_p95_ms": pct(wait, 0.95),
    }


def fanout(side: Side, sz: Sizes) -> dict[str, Any]:
    """Scenario 2: a group of N no-op members (Baton) vs a chord of N (Celery); wall time."""
    return {
        str(n): median([r.latency for r in runs_of(side, partial(side.fanout, n), runs)])
        for n, runs in sz.fanout
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def fanout_cpu(side: Side, sz: Sizes, r: redis.Redis) -> dict[str, float]:
    """Where the biggest fan-out's CPU goes, per member (ms): the worker's consumer (parent)
    process, its pool children, redis-server, and the client."""
    n = max(size for size, _ in sz.fanout)
    if not Path("/proc/self/stat").exists():
        return {}
    parent = side.pids()[0]
    children = _children(parent)

    def snapshot() -> tuple[float, float, float, float]:
        info = r.info("cpu")
        me = resource.getrusage(resource.RUSAGE_SELF)
        return (
            _cpu_seconds(parent),
            sum(_cpu_seconds(c) for c in children),
            float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            me.ru_utime + me.ru_stime,
        )

    before = snapshot()
    done = runs_of(side, lambda: side.fanout(n), 1)
    after = snapshot()
    names = ("worker_parent", "pool_children", "redis", "client")
    per = {k: (a - b) / n * 1000 for k, a, b in zip(names, after, before, strict=True)}
    return per if done else {k: math.nan for k in per}


def payload(side: Side, sz: Sizes) -> dict[str, Any]:
    """Scenario 2b: 5 steps, each reading the previous 100 KB output and writing 100 KB."""
    runs_of(side, lambda: side.payload(sz.steps, sz.payload_size), 1)  # warm-up
    runs = runs_of(side, lambda: side.payload(sz.steps, sz.payload_size), sz.payload_runs)
    lat = [r.latency * 1000 for r in runs]
    return {"median_ms": median(lat), "p95_ms": pct(lat, 0.95)}


def throughput(side: Side, sz: Sizes) -> dict[str, Any]:
    """Scenario 3: N workflows/chains submitted at once; completions per second (those
    lost, not finished within the side's bound, neither counted nor waited for again)."""
    t0 = time.perf_counter()
    handles = side.submit_many(sz.throughput, sz.steps)
    submitted = time.perf_counter() - t0
    lost = side.wait_all(handles)
    wall = time.perf_counter() - t0
    return {"per_s": (sz.throughput - lost) / wall, "submit_s": submitted, "wall_s": wall}


def _stats(r: redis.Redis) -> tuple[dict[str, int], dict[str, int]]:
    info = r.info("stats")
    general = {
        k: int(info[k])
        for k in ("total_reads_processed", "total_net_input_bytes", "total_net_output_bytes")
    }
    cmds = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()}
    return general, cmds


def _window(r: redis.Redis, work: Any) -> tuple[dict[str, int], dict[str, int], float]:
    r.config_resetstat()
    t0 = time.perf_counter()
    gen0, _ = _stats(r)
    work()
    duration = time.perf_counter() - t0
    gen1, cmds = _stats(r)
    gen = {k: gen1[k] - gen0[k] for k in gen1}
    # Our own CONFIG RESETSTAT / INFO calls are not the side's work.
    for own in ("info", "config|resetstat", "config"):
        cmds.pop(own, None)
    return gen, cmds, duration


def cost(side: Side, sz: Sizes, r: redis.Redis, logdir: Path) -> dict[str, Any]:
    """Scenario 4: Redis round trips, commands and bytes per step, idle noise subtracted.

    Round trips are ``total_reads_processed`` (one read event per request or pipeline);
    commands are ``INFO commandstats`` calls, which include commands run inside Lua
    scripts. The workers' idle traffic (BRPOP timeouts, heartbeats) is measured over an
    idle window first and subtracted pro rata.
    """
    runs_of(side, lambda: side.sequential(sz.steps), 1)  # warm-up
    idle_gen, idle_cmds, idle_s = _window(r, lambda: time.sleep(sz.idle_window))
    msglog.enable(logdir, True)
    try:
        done: list[Run] = []
        gen, cmds, busy_s = _window(
            r, lambda: done.extend(runs_of(side, lambda: side.sequential(sz.steps), sz.cost_runs))
        )
    finally:
        msglog.enable(logdir, False)
    messages = msglog.collect(logdir)
    steps = max(1, len(done)) * sz.steps  # (the runs lost did only part of their steps)
    scale = busy_s / idle_s

    def per_step(total: int, idle: int) -> float:
        return max(0.0, total - idle * scale) / steps

    per_cmd = {c: per_step(n, idle_cmds.get(c, 0)) for c, n in cmds.items()}
    per_cmd = {c: v for c, v in sorted(per_cmd.items(), key=lambda kv: -kv[1]) if v >= 0.05}
    return {
        "round_trips": per_step(gen["total_reads_processed"], idle_gen["total_reads_processed"]),
        "commands": sum(per_cmd.values()),
        "per_command": per_cmd,
        "net_in_bytes": per_step(gen["total_net_input_bytes"], idle_gen["total_net_input_bytes"]),
        "net_out_bytes": per_step(
            gen["total_net_output_bytes"], idle_gen["total_net_output_bytes"]
        ),
        "messages_per_step": len(messages) / steps,
        "bytes_per_message": statistics.median(m["bytes"] for m in messages) if messages else 0,
    }


def handoff(side: Side, sz: Sizes, logdir: Path) -> dict[str, Any]:
    """Scenario 5: step latency and message bytes as the state handed on grows.

    Step 1 writes S bytes; steps 2..5 follow (Baton: no-ops that load the shared data;
    Celery: tasks that pass the previous result on, the way a chain carries state).
    Step latency = (last step done - first step done) / 4, from server-side timestamps.
    """
    out: dict[str, Any] = {}
    for size, runs in sz.handoff:
        step_ms, msg = [], []
        for _ in range(runs):
            msglog.enable(logdir, True)
            try:
                done = runs_of(side, partial(side.handoff, sz.steps, size), 1)
            finally:
                msglog.enable(logdir, False)
            step_ms += [(r.finished_at - r.first_done_at) / (sz.steps - 1) * 1000 for r in done]
            sizes = [m["bytes"] for m in msglog.collect(logdir)]
            msg.append(max(sizes) if sizes else 0)
        out[str(size)] = {"step_ms": median(step_ms), "max_message_bytes": max(msg)}
    return out


def memory(side: Side, sz: Sizes, r: redis.Redis, retention: int) -> dict[str, Any]:
    """Scenario 6: used_memory per finished workflow, then after retention has expired.

    Runs in its own session whose workers have ``BATON_RETENTION_SECONDS`` (Baton) and
    ``BATON_RESULT_EXPIRES`` (Celery's result keys, both sides) set to ``retention``.
    """
    _settle(r)
    before = int(r.info("memory")["used_memory"])
    keys_before = int(r.dbsize())
    handles = side.submit_many(sz.memory_runs, sz.steps)
    lost = side.wait_all(handles)  # (counted on the side too)
    after = int(r.info("memory")["used_memory"])
    keys_after = int(r.dbsize())
    time.sleep(retention + 0.5)
    _settle(r)
    expired = int(r.info("memory")["used_memory"])
    return {
        "bytes_per_workflow": (after - before) / sz.memory_runs,
        "after_expiry_bytes_per_workflow": (expired - before) / sz.memory_runs,
        "keys_per_workflow": (keys_after - keys_before) / sz.memory_runs,
        "retention_s": retention,
        "lost": lost,
    }


def _settle(r: redis.Redis, timeout: float = 20.0, interval: float = 0.25) -> None:
    """Wait until Redis's active expiry has removed what is due (DBSIZE stops falling)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        n = int(r.dbsize())
        if n == last:
            return
        last = n
        time.sleep(interval)
