"""``python -m bench.map_limits``: limits inside maps, and freed slots, measured.

Each call of the agents here records when it started (and ended) in Redis; the figures
are read from those records, not from the workers' logs.

1. A ``60/m`` plain task mapped over 30 items at ``batch_size: 10``: the most calls in
   any 60 s window (the limit: 60; the issue saw 30 in 2.1 s), the smallest gap between
   two calls, and the run time against the ideal (29 turns, 1.0007 s apart).
2. A ``1/s`` async task mapped over 20 items at ``batch_size: 1``: run time against the
   ideal (19 turns 1.04 s apart: 19.8 s; the issue saw 36 s).
3. 10 top-level steps of 2 s under ``concurrency_limit=5`` (a parallel group): the most
   running at once and the run time (ideal: 4 s; polling found freed slots in 6 s).
4. The same 2 s task mapped over 20 items at ``batch_size: 10``: the most running at once
   (the issue saw 20) and the run time (ideal: 8 s).
5. A 10,000-item no-op map at the default ``batch_size`` and at 1, 10 and 100, for scale.

One redis-server and one asyncio worker process (50 wide, every queue) of its own.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict

from agents import Agent, StepInput
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.model import WorkflowStatus
from orchestration.model.steps import MapStep
from orchestration.settings import BatonSettings

# --------------------------------------------------------------------------- the agents

# (run as ``-m bench.map_limits``, this copy is __main__: the agents are bench.map_limits')
_register = __name__ != "__main__"
mlim = Agent("mlim", description="bench.map_limits: calls that record when they ran",
             register=_register)  # fmt: skip
held = Agent("mheld", description="bench.map_limits: 2 s calls, 5 at once", concurrency_limit=5,
             register=_register)  # fmt: skip
_log: redis.Redis[bytes] | None = None


def record(key: str, value: float) -> None:
    global _log
    if _log is None:
        _log = redis.Redis.from_url(os.environ["BATON_REDIS_URL"])
    _log.rpush(key, repr(value))


class Tag(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str


@mlim.task(params=Tag, rate_limit="60/m")
def per_minute(step: StepInput[Tag]) -> dict[str, Any]:
    record(f"mlim:{step.parameters.tag}:start", time.time())
    return {"index": step.index}


@mlim.task(params=Tag, rate_limit="1/s")
async def per_second(step: StepInput[Tag]) -> dict[str, Any]:
    record(f"mlim:{step.parameters.tag}:start", time.time())
    return {"index": step.index}


@mlim.task(params=Tag)
def noop(step: StepInput[Tag]) -> int:
    return 1


@held.task(params=Tag)
async def two_seconds(step: StepInput[Tag]) -> dict[str, Any]:
    record(f"mlim:{step.parameters.tag}:start", time.time())
    await asyncio.sleep(2.0)
    record(f"mlim:{step.parameters.tag}:end", time.time())
    return {"index": step.index}


# --------------------------------------------------------------------------- measuring


def log(msg: str) -> None:
    print(f"[bench.map_limits {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def times(r: redis.Redis[bytes], tag: str, what: str = "start") -> list[float]:
    return sorted(float(t) for t in r.lrange(f"mlim:{tag}:{what}", 0, -1))


def most_in_window(starts: list[float], window: float) -> int:
    return max(sum(1 for t in starts if s <= t < s + window) for s in starts)


def most_at_once(starts: list[float], ends: list[float]) -> int:
    events = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends], key=lambda e: (e[0], e[1]))
    now = most = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def timed_map(
    orch: WorkflowOrchestrator, n: int, task: str, agent: str = "mlim", **options: Any
) -> tuple[float, str]:
    """A map of ``task`` over ``n`` items (given as the workflow's first step's output),
    from its start to its end: (seconds, tag)."""
    tag = f"{task}-{n}-{time.monotonic_ns()}"
    flow = {"name": f"{n} x {task}", "steps": [
        {"agent_id": "mlim", "task_type": "items", "parameters": {"n": n}, "output_key": "src"},
        {"map": {"over": "src.items", "agent_id": agent, "task_type": task,
                 "parameters": {"tag": tag}}, "output_key": "out", **options},
    ]}  # fmt: skip
    wid = orch.run_workflow(flow)
    ctx = orch.wait(wid, timeout=600)
    if ctx.status != WorkflowStatus.COMPLETED:
        raise RuntimeError(f"{wid}: {ctx.status} {ctx.error}")
    # (the map from the list's end to its aggregate's)
    began, ended = ctx.task_results["step_1"].finished_at, ctx.task_results["step_2"].finished_at
    assert began and ended
    return ts(ended) - ts(began), tag


def ts(iso: Any) -> float:
    return float(datetime.fromisoformat(str(iso)).timestamp())


class Count(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


@mlim.task(params=Count)
def items(step: StepInput[Count]) -> dict[str, Any]:
    return {"items": list(range(step.parameters.n))}


def run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-map-limits-") as tmp:
        home = Path(tmp)
        server = RedisServer(home / "redis").start()
        env = {"BATON_REDIS_URL": server.url, "BATON_AGENT_MODULES": "bench.map_limits",
               "BATON_HOME": str(home), "BATON_KEY_PREFIX": "mlim"}  # fmt: skip
        os.environ.update(env)
        settings = BatonSettings()
        orch = WorkflowOrchestrator(server.url, settings=settings, local_workers=False)
        pool = LocalWorkers(server.url, [[]], concurrency=50, pool="asyncio", env=env,
                            log_dir=home / "logs")  # fmt: skip
        pool.start(orch.app)
        r = redis.Redis.from_url(server.url)
        try:
            secs, tag = timed_map(orch, 30, "per_minute", batch_size=10)
            s = times(r, tag)
            gaps = [b - a for a, b in zip(s, s[1:], strict=False)]
            out["60/m x 30, batch 10"] = {
                "calls": len(s), "most in any 60 s": most_in_window(s, 60.0),
                "most in any 10 s": most_in_window(s, 10.0),
                "smallest gap s": round(min(gaps), 3), "run s": round(secs, 2),
                "ideal s": round(29 * 60.04 / 60, 2),
            }  # fmt: skip
            log(f"60/m: {out['60/m x 30, batch 10']}")

            secs, tag = timed_map(orch, 20, "per_second", batch_size=1)
            s = times(r, tag)
            out["1/s x 20, batch 1"] = {
                "calls": len(s), "most in any 1 s": most_in_window(s, 1.0),
                "first to last call s": round(s[-1] - s[0], 2), "run s": round(secs, 2),
                "ideal s": round(19 * 1.04, 2),
            }  # fmt: skip
            log(f"1/s: {out['1/s x 20, batch 1']}")

            tag = f"group-{time.monotonic_ns()}"
            member = {"agent_id": "mheld", "task_type": "two_seconds", "parameters": {"tag": tag}}
            t0 = time.perf_counter()
            wid = orch.run_workflow({"steps": [{"parallel": [member] * 10, "output_key": "g"}]})
            ctx = orch.wait(wid, timeout=120)
            wall = time.perf_counter() - t0
            assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
            s, e = times(r, tag), times(r, tag, "end")
            out["10 steps x 2 s, concurrency 5"] = {
                "most at once": most_at_once(s, e), "first start to last end s":
                round(e[-1] - s[0], 2), "workflow s": round(wall, 2), "ideal s": 4.0,
            }  # fmt: skip
            log(f"concurrency, steps: {out['10 steps x 2 s, concurrency 5']}")

            secs, tag = timed_map(orch, 20, "two_seconds", agent="mheld", batch_size=10)
            s, e = times(r, tag), times(r, tag, "end")
            out["map 20 x 2 s, concurrency 5, batch 10"] = {
                "most at once": most_at_once(s, e),
                "first start to last end s": round(e[-1] - s[0], 2), "run s": round(secs, 2),
                "ideal s": 8.0,
            }  # fmt: skip
            log(f"concurrency, map: {out['map 20 x 2 s, concurrency 5, batch 10']}")

            default = MapStep.model_fields["batch_size"].default
            for size in dict.fromkeys([default, 1, 10, 100]):
                secs, _ = timed_map(orch, 10_000, "noop", batch_size=size)
                out[f"10,000 no-op items, batch {size}"] = {"run s": round(secs, 2)}
                log(f"10,000 at {size}: {secs:.2f} s")
        finally:
            pool.stop()
            orch.close()
            server.stop()
    return out


def main() -> None:
    from bench import map_limits  # (the agents, registered)

    results = map_limits.run()
    width = max(len(k) for k in results)
    for name, figures in results.items():
        print(f"{name:<{width}}  " + ", ".join(f"{k}: {v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
