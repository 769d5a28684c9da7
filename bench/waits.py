"""``python -m bench.waits [--quick] [--runs N]``: waits and durable timers, measured.

1. **Signal to next step started**: a workflow waits for a signal; from the moment
   ``signal()`` is called to when the next step's agent starts (its ``started_at``), one
   script and one message in between. Target: median <= 10 ms.
2. **10,000 workflows sleeping 5 s, then waking**: how late each timer fires (the wait's
   commit against its due time; target: p99 <= 1 s) and Redis memory per sleeping workflow.
   Beside it, the Celery way of the same delay: 10,000 tasks sent with ``countdown=5``,
   held in the worker's memory until due (their lateness, and the worker's memory).

Owns a private redis-server and its workers, as ``python -m bench`` does.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout

from bench.sides import RUN_SECONDS, Workdir
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.flow.broker import celery_config
from orchestration.model import WorkflowStatus
from orchestration.settings import BatonSettings
from orchestration.state.keys import WorkflowKeys


def log(msg: str) -> None:
    print(f"[bench.waits {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:  # every result lost
        return math.nan
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_rss_mb(pid: int) -> float:
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return (rss_kb(pid) + sum(rss_kb(int(k)) for k in kids)) / 1024


def signal_latency(orch: WorkflowOrchestrator, n: int) -> dict[str, Any]:
    flow = {"name": "signal latency", "steps": [
        {"wait_for": "go", "output_key": "go"},
        {"agent_id": "bench", "task_type": "noop", "output_key": "after"}]}  # fmt: skip
    lat: list[float] = []
    for _ in range(n):
        wid = orch.run_workflow(flow)
        orch.wait(wid, timeout=30, until=("waiting",))
        t0 = time.time()
        assert orch.signal(wid, "go", {}) == "applied"
        ctx = orch.wait(wid, timeout=30)
        assert ctx.status == WorkflowStatus.COMPLETED
        started = ctx.task_results["step_2"].started_at
        assert started
        lat.append((datetime.fromisoformat(started).timestamp() - t0) * 1000)
    return {"n": n, "median_ms": statistics.median(lat), "p95_ms": pct(lat, 95)}


def baton_sleepers(
    orch: WorkflowOrchestrator, r: redis.Redis, n: int, secs: float
) -> dict[str, Any]:
    flow = {"name": "sleeper", "steps": [{"sleep": secs, "output_key": "nap"}]}
    t0 = time.time()
    ids = [orch.run_workflow(flow) for _ in range(n)]
    created = time.time() - t0
    # What one sleeping workflow costs Redis: every key it has, and its timer's entry.
    last = ids[-1]
    orch.wait(last, timeout=60, until=("waiting",))
    keys = WorkflowKeys("bench", last).all()
    mem = sum(int(r.memory_usage(k) or 0) for k in keys)
    mem += int(r.memory_usage("bench:due") or 0) // max(int(r.zcard("bench:due")), 1)
    late: list[float] = []
    for wid in ids:
        ctx = orch.wait(wid, timeout=180)
        res = ctx.task_results["step_1"]
        assert ctx.status == WorkflowStatus.COMPLETED and res.started_at and res.finished_at
        due = datetime.fromisoformat(res.started_at).timestamp() + secs
        late.append(datetime.fromisoformat(res.finished_at).timestamp() - due)
    return {
        "n": n,
        "create_s": created,
        "memory_bytes_per_workflow": mem,
        "p50_late_s": pct(late, 50),
        "p99_late_s": pct(late, 99),
        "max_late_s": max(late),
    }


def celery_countdowns(url: str, work: Path, n: int, secs: float) -> dict[str, Any]:
    """The Celery way: n tasks with countdown=secs, held by one worker until due."""
    env_py = f"""
import time
from celery import Celery
from orchestration.flow.broker import celery_config
from orchestration.settings import BatonSettings
app = Celery("bare_waits")
app.conf.update(celery_config(BatonSettings(), {url!r}))
app.conf.update(task_ignore_result=False, result_backend={url!r})
@app.task(name="bare.stamp")
def stamp(due):
    return time.time() - due
"""
    (work / "bare_waits.py").write_text(env_py)
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bare_waits", "worker", "-c", "2", "-P",
         "prefork", "-Q", "bare", "-l", "WARNING"],
        cwd=work, env={"PYTHONPATH": f"{work}:{Path(__file__).resolve().parents[1]}",
                       "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        app = Celery("bare_client")
        app.conf.update(celery_config(BatonSettings(), url))
        app.conf.update(task_ignore_result=False, result_backend=url)
        time.sleep(3)
        t0 = time.time()
        results = [
            app.send_task("bare.stamp", args=(time.time() + secs,), countdown=secs, queue="bare")
            for _ in range(n)
        ]
        sent = time.time() - t0
        time.sleep(secs * 0.8)
        held_mb = tree_rss_mb(proc.pid)
        # One bound for the run, not one per result: what has not come by then is lost.
        deadline, late, lost = time.monotonic() + secs + RUN_SECONDS, [], 0
        for res in results:
            try:
                late.append(res.get(timeout=max(0.01, deadline - time.monotonic())))
            except ResultTimeout:
                lost += 1
        return {
            "n": n,
            "send_s": sent,
            "worker_rss_mb_while_holding": held_mb,
            "p50_late_s": pct(late, 50),
            "p99_late_s": pct(late, 99),
            "max_late_s": max(late, default=math.nan),
            "lost": lost,
        }
    finally:
        proc.terminate()
        proc.wait(30)


def run_once(root: Path, quick: bool = False) -> dict[str, Any]:
    """One full run in ``root``: a private redis-server, its workers, then bare Celery."""
    n_sig, n_sleep, secs = (20, 500, 2.0) if quick else (200, 10_000, 5.0)
    server = RedisServer(root / "redis").start()
    try:
        work = Workdir(root, server.url)
        settings = BatonSettings(
            redis_url=server.url, key_prefix="bench", home=root / "home",
            agent_modules=["bench.agents"],
        )  # fmt: skip
        orch = WorkflowOrchestrator(server.url, settings=settings, local_workers=False)
        workers = LocalWorkers(server.url, [[]], concurrency=2, env=work.env(),
                               log_dir=root / "logs")  # fmt: skip
        workers.start(orch.app)
        try:
            r = redis.Redis.from_url(server.url)
            sig = signal_latency(orch, n_sig)
            log(f"signal -> next step started {sig}")
            sleepers = baton_sleepers(orch, r, n_sleep, secs)
            log(f"{n_sleep} sleepers {sleepers}")
        finally:
            workers.stop()
            orch.close()
        bare = celery_countdowns(server.url, root, n_sleep, secs)
        log(f"celery countdowns {bare}")
        return {"signal": sig, "baton_sleepers": sleepers, "celery_countdown": bare}
    finally:
        server.stop()


def run(root: Path, runs: int, quick: bool = False) -> list[dict[str, Any]]:
    out = []
    for i in range(runs):
        log(f"run {i + 1}/{runs}")
        sub = root / f"waits-{i + 1}"
        sub.mkdir(parents=True, exist_ok=True)
        out.append(run_once(sub, quick))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-waits-") as tmp:
        out = run(Path(tmp), a.runs, a.quick)
    print(report(out))
    return 0


def section(runs: list[dict[str, Any]]) -> str:
    """Section 9 of docs/benchmarks.md."""
    n = runs[0]["baton_sleepers"]["n"]
    return "\n".join([
        "## 9. People and time in the loop: signals and durable timers\n",
        f"Measured by `bench/waits.py` ({len(runs)} full run(s); each a private"
        " redis-server, two prefork workers of concurrency 2). **Signal to next step"
        " started**: a workflow waits for a signal; from the call to `signal()` to the"
        " `started_at` of the step after the wait (one script, one message). **Sleepers**: "
        f"{n:,} workflows of one `sleep` step, started together; lateness is the wait's"
        " commit against its due time. The Celery way of the same delay is a task sent with"
        " `countdown=`, which the worker holds in memory until due; its lateness is the"
        " task's start against its due time.\n",
        report(runs),
        "",
    ])  # fmt: skip


def report(runs: list[dict[str, Any]]) -> str:
    def span(key: str, field: str, fmt: str = "{:.2f}") -> str:
        xs = [r[key][field] for r in runs]
        return f"{fmt.format(min(xs))}–{fmt.format(max(xs))}"

    lost = [
        "| countdown tasks lost (no result in time, left out) | – | "
        f"{span('celery_countdown', 'lost', '{:.0f}')} | |"
    ] if any(r["celery_countdown"].get("lost") for r in runs) else []  # fmt: skip
    return "\n".join([
        "| figure | Baton (min–max over runs) | Celery way | target |",
        "|---|---|---|---|",
        f"| signal → next step started, median | {span('signal', 'median_ms')} ms | – | ≤ 10 ms |",
        f"| signal → next step started, p95 | {span('signal', 'p95_ms')} ms | – | |",
        f"| {runs[0]['baton_sleepers']['n']:,} sleepers: p99 lateness | "
        f"{span('baton_sleepers', 'p99_late_s')} s | {span('celery_countdown', 'p99_late_s')} s "
        "(countdown ETA) | ≤ 1 s |",
        f"| sleepers: max lateness | {span('baton_sleepers', 'max_late_s')} s | "
        f"{span('celery_countdown', 'max_late_s')} s | |",
        f"| Redis memory per sleeping workflow | "
        f"{span('baton_sleepers', 'memory_bytes_per_workflow', '{:,.0f}')} bytes | "
        "worker RSS holding them: "
        f"{span('celery_countdown', 'worker_rss_mb_while_holding', '{:.0f}')} MB | |",
        *lost,
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
