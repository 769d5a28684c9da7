"""``python -m bench.map_limits [--quick]``: limits inside maps, and freed slots, measured;
section 11 of docs/benchmarks.md (``python -m bench``, ``--only map_limits``).

Each call of the agents here records when it started (and ended) in Redis; the figures
are read from those records, not from the workers' logs. The full sizes (``--quick``:
a few items of each, 0.5 s calls, 1,000 no-op items):

1. A ``60/m`` plain task mapped over 30 items at ``batch_size: 10``: the most calls in
   any 60 s window (the limit: 60; the issue saw 30 in 2.1 s), the smallest gap between
   two calls, and the run time against the ideal (29 turns, 1.0007 s apart).
2. A ``1/s`` async task mapped over 20 items at ``batch_size: 1``: run time against the
   ideal (19 turns 1.04 s apart: 19.8 s; the issue saw 36 s).
3. 10 top-level steps of 2 s under ``concurrency_limit=5`` (a parallel group): the most
   running at once and the run time (ideal: 4 s; polling found freed slots in 6 s).
4. The same 2 s task mapped over 20 items at ``batch_size: 10``: the most running at once
   (the issue saw 20) and the run time (ideal: 8 s).
5. A 10,000-item no-op map at the default ``batch_size`` (run alone: at 1, 10 and 100 too,
   for scale).

One redis-server and one asyncio worker process (50 wide, every queue) of its own. A
workflow whose end has not come within ``RUN_SECONDS`` is lost: that scenario is left
out, counted in ``lost``, and the bench goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict

from agents import Agent, StepInput
from bench.sides import RUN_SECONDS, Lost, Workdir, counted
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.errors import WorkflowTimeout
from orchestration.model import WorkflowStatus
from orchestration.model.limits import Rate
from orchestration.model.steps import MapStep
from orchestration.settings import BatonSettings
from orchestration.state.limiter import spacing_ms

# --------------------------------------------------------------------------- the agents

# (run as ``-m bench.map_limits``, this copy is __main__: the agents are bench.map_limits')
_register = __name__ != "__main__"
mlim = Agent("mlim", description="bench.map_limits: calls that record when they ran",
             register=_register)  # fmt: skip
HELD_AT_ONCE = 5
held = Agent("mheld", description="bench.map_limits: calls held a while, 5 at once",
             concurrency_limit=HELD_AT_ONCE, register=_register)  # fmt: skip
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


class Hold(Tag):
    seconds: float = 2.0


@held.task(params=Hold)
async def hold(step: StepInput[Hold]) -> dict[str, Any]:
    record(f"mlim:{step.parameters.tag}:start", time.time())
    await asyncio.sleep(step.parameters.seconds)
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
    from its start to its end: (seconds, tag). ``options``: the map step's (``batch_size``)
    and ``parameters`` beside the tag."""
    tag = f"{task}-{n}-{time.monotonic_ns()}"
    params = {"tag": tag, **options.pop("parameters", {})}
    flow = {"name": f"{n} x {task}", "steps": [
        {"agent_id": "mlim", "task_type": "items", "parameters": {"n": n}, "output_key": "src"},
        {"map": {"over": "src.items", "agent_id": agent, "task_type": task,
                 "parameters": params}, "output_key": "out", **options},
    ]}  # fmt: skip
    ctx = finished(orch, orch.run_workflow(flow))
    # (the map from the list's end to its aggregate's)
    began, ended = ctx.task_results["step_1"].finished_at, ctx.task_results["step_2"].finished_at
    assert began and ended
    return ts(ended) - ts(began), tag


def finished(orch: WorkflowOrchestrator, wid: str) -> Any:
    """The workflow's end, completed; :class:`Lost` if it has not ended in ``RUN_SECONDS``."""
    try:
        ctx = orch.wait(wid, timeout=RUN_SECONDS)
    except WorkflowTimeout as exc:
        raise Lost(str(exc)) from None
    if ctx.status != WorkflowStatus.COMPLETED:
        raise RuntimeError(f"{wid}: {ctx.status} {ctx.error}")
    return ctx


def ts(iso: Any) -> float:
    return float(datetime.fromisoformat(str(iso)).timestamp())


class Count(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int


@mlim.task(params=Count)
def items(step: StepInput[Count]) -> dict[str, Any]:
    return {"items": list(range(step.parameters.n))}


@dataclass(frozen=True)
class LimitSizes:
    """How much of each scenario; ``quick()`` is for the smoke test."""

    per_minute: int = 30  # items of the 60/m map
    per_minute_batch: int = 10
    per_second: int = 20  # items of the 1/s map (batch 1)
    group: int = 10  # top-level steps under concurrency_limit=5
    held_items: int = 20  # items of the map under concurrency_limit=5
    held_batch: int = 10
    held_s: float = 2.0  # each held call's time
    noop: int = 10_000  # the no-op map's items, at the default batch_size
    batch_sizes: tuple[int, ...] = ()  # more batch sizes for it (run alone: 1, 10, 100)

    @classmethod
    def quick(cls) -> LimitSizes:
        return cls(per_minute=4, per_minute_batch=2, per_second=4, held_items=10, held_batch=5,
                   held_s=0.5, noop=1_000)  # fmt: skip


#: A figure of a scenario: [what, measured, the limit or the ideal, whether the limit held
#: (None: no limit to hold, an ideal or a figure for scale)].
Figure = list[Any]


def _turn(rate: str) -> float:
    """Seconds between two turns of ``rate`` (the limiter's spacing)."""
    return spacing_ms(Rate.parse(rate)) / 1000


def per_minute_map(
    orch: WorkflowOrchestrator, r: redis.Redis[bytes], sz: LimitSizes
) -> list[Figure]:
    n, turn = sz.per_minute, _turn("60/m")
    secs, tag = timed_map(orch, n, "per_minute", batch_size=sz.per_minute_batch)
    s = times(r, tag)
    gaps = [b - a for a, b in zip(s, s[1:], strict=False)]
    in10 = math.ceil(10 / turn)
    return [
        ["calls", len(s), f"{n}", len(s) == n],
        ["most calls in any 60 s", most_in_window(s, 60.0), "≤ 60", most_in_window(s, 60.0) <= 60],
        ["most calls in any 10 s", most_in_window(s, 10.0), f"≤ {in10}",
         most_in_window(s, 10.0) <= in10],
        ["smallest gap between two calls (s)", round(min(gaps), 3), f"turns {turn:.4f} s apart",
         None],
        ["run time (s)", round(secs, 2), f"ideal {(n - 1) * turn:.2f}", None],
    ]  # fmt: skip


def per_second_map(
    orch: WorkflowOrchestrator, r: redis.Redis[bytes], sz: LimitSizes
) -> list[Figure]:
    n, turn = sz.per_second, _turn("1/s")
    secs, tag = timed_map(orch, n, "per_second", batch_size=1)
    s = times(r, tag)
    return [
        ["calls", len(s), f"{n}", len(s) == n],
        ["most calls in any 1 s", most_in_window(s, 1.0), "≤ 1", most_in_window(s, 1.0) <= 1],
        ["first to last call (s)", round(s[-1] - s[0], 2), f"ideal {(n - 1) * turn:.2f}", None],
        ["run time (s)", round(secs, 2), f"ideal {(n - 1) * turn:.2f}", None],
    ]  # fmt: skip


def _held(r: redis.Redis[bytes], tag: str, n: int, secs: float, sz: LimitSizes) -> list[Figure]:
    s, e = times(r, tag), times(r, tag, "end")
    most = most_at_once(s, e)
    ideal = math.ceil(n / HELD_AT_ONCE) * sz.held_s
    return [
        ["calls", len(s), f"{n}", len(s) == n],
        ["most running at once", most, f"≤ {HELD_AT_ONCE}", most <= HELD_AT_ONCE],
        ["first start to last end (s)", round(e[-1] - s[0], 2), f"ideal {ideal:.2f}", None],
        ["run time (s)", round(secs, 2), f"ideal {ideal:.2f}", None],
    ]


def held_group(orch: WorkflowOrchestrator, r: redis.Redis[bytes], sz: LimitSizes) -> list[Figure]:
    """Top-level steps (a parallel group) under the limit; run time: the whole workflow's."""
    tag = f"group-{time.monotonic_ns()}"
    params = {"tag": tag, "seconds": sz.held_s}
    member = {"agent_id": "mheld", "task_type": "hold", "parameters": params}
    t0 = time.perf_counter()
    finished(orch, orch.run_workflow({"steps": [{"parallel": [member] * sz.group,
                                                 "output_key": "g"}]}))  # fmt: skip
    return _held(r, tag, sz.group, time.perf_counter() - t0, sz)


def held_map(orch: WorkflowOrchestrator, r: redis.Redis[bytes], sz: LimitSizes) -> list[Figure]:
    n = sz.held_items
    secs, tag = timed_map(orch, n, "hold", agent="mheld", batch_size=sz.held_batch,
                          parameters={"seconds": sz.held_s})  # fmt: skip
    return _held(r, tag, n, secs, sz)


def noop_map(orch: WorkflowOrchestrator, n: int, size: int) -> list[Figure]:
    secs, _ = timed_map(orch, n, "noop", batch_size=size)
    return [["run time (s)", round(secs, 2), "–", None]]


def run(sz: LimitSizes | None = None, log: Callable[[str], None] = log) -> dict[str, Any]:
    """Every scenario, in one worker session of its own: ``{"sizes", "scenarios": {name:
    [figure, ...]}, "lost": [...]}``."""
    sz = sz or LimitSizes()
    out: dict[str, Any] = {"sizes": asdict(sz), "scenarios": {}, "lost": []}
    default = MapStep.model_fields["batch_size"].default
    t = f"{sz.held_s:g} s"
    scenarios: list[tuple[str, Callable[..., list[Figure]]]] = [
        (f"60/m, a map of {sz.per_minute} at batch {sz.per_minute_batch}", per_minute_map),
        (f"1/s, a map of {sz.per_second} at batch 1", per_second_map),
        (f"concurrency_limit={HELD_AT_ONCE}, a group of {sz.group} steps of {t}", held_group),
        (f"concurrency_limit={HELD_AT_ONCE}, a map of {sz.held_items} calls of {t} at batch"
         f" {sz.held_batch}", held_map),
    ]  # fmt: skip
    for size in dict.fromkeys([default, *sz.batch_sizes]):
        scenarios.append(
            (f"no limit, a map of {sz.noop:,} no-op items at batch {size}"
             + (" (the default)" if size == default else ""),
             lambda orch, r, sz, size=size: noop_map(orch, sz.noop, size))
        )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-map-limits-") as tmp:
        home = Path(tmp)
        server = RedisServer(home / "redis").start()
        extra = {"BATON_AGENT_MODULES": "bench.map_limits", "BATON_KEY_PREFIX": "mlim"}
        env = Workdir(home, server.url).env(extra)
        settings = BatonSettings(redis_url=server.url, key_prefix="mlim", home=home,
                                 agent_modules=["bench.map_limits"])  # fmt: skip
        orch = WorkflowOrchestrator(server.url, settings=settings, local_workers=False)
        pool = LocalWorkers(server.url, [[]], concurrency=50, pool="asyncio", env=env,
                            log_dir=home / "logs")  # fmt: skip
        r = redis.Redis.from_url(server.url)
        try:
            pool.start(orch.app)
            for name, fn in scenarios:
                t0 = time.perf_counter()
                run = partial(fn, orch, r, sz)
                figures = counted(out["lost"], "baton", f"11. {name}", RUN_SECONDS, run, log)
                if figures is not None:
                    out["scenarios"][name] = figures
                    brief = ", ".join(f"{f[0]}: {f[1]}" for f in figures)
                    log(f"  {name}: {brief} ({time.perf_counter() - t0:.1f}s)")
        finally:
            r.close()
            pool.stop()
            orch.close()
            server.stop()
    return out


def _held_cell(held: bool | None) -> str:
    return "–" if held is None else ("yes" if held else "**no**")


def table(res: dict[str, Any]) -> str:
    rows = ["| scenario | figure | measured | limit or ideal | held? |", "|---|---|---|---|---|"]
    for name, figures in res["scenarios"].items():
        for i, (what, value, expected, held) in enumerate(figures):
            shown = f"{value:,}" if isinstance(value, int) else f"{value:g}"
            rows.append(f"| {name if i == 0 else ''} | {what} | {shown} | {expected} |"
                        f" {_held_cell(held)} |")  # fmt: skip
    return "\n".join(rows)


def section(res: dict[str, Any]) -> str:
    """Section 11 of docs/benchmarks.md."""
    sz = res["sizes"]
    return "\n".join([
        "## 11. Limits inside maps\n",
        "Measured by `bench/map_limits.py` (one run: a private redis-server, one Baton worker"
        " process with an asyncio pool of 50 on every queue, so that only the limits hold"
        " steps back). Each item of a map is a step for its task's limits, whatever the"
        " batch size. Every call records when it started (and ended) in Redis; the"
        " figures are read from those records. Run time is a map's, from the list step's"
        " commit to the map's (a group's: the whole workflow's, from `run_workflow()`)."
        " Turns of a rate are spaced by the limiter (`spacing_ms`: the period, plus 40 ms,"
        f" over the count); each call under the concurrency limit takes {sz['held_s']:g} s. Only"
        " Baton: bare Celery's `rate_limit` is per worker process and it has no concurrency"
        " limit.\n",
        table(res),
        "",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from bench import map_limits  # (the agents, registered)

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    sz = (
        map_limits.LimitSizes.quick()
        if a.quick
        else map_limits.LimitSizes(batch_sizes=(1, 10, 100))
    )
    print(map_limits.table(map_limits.run(sz)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
