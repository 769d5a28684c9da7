"""``python -m bench [--quick] [--repeats N] [--only io|waits|maps|map_limits|failover]
[--soak FAULTS] [--out DIR]``: run every scenario on both sides, write the report.

Owns everything it starts: a private redis-server on a free port (never a shared Redis),
and each side's worker processes, one side at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import celery
import kombu
import redis

from bench import io as iobench
from bench import maps as mapsbench
from bench import profiling, report, scenarios
from bench import waits as waitsbench
from bench.scenarios import Sizes
from bench.sides import RUN_SECONDS, BareSide, BatonSide, Side, Workdir, ts
from orchestration.client.embedded import RedisServer


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_session(side: Side, sz: Sizes, r: redis.Redis[bytes], work: Workdir) -> dict[str, Any]:
    """Every timed scenario for one side, in one worker session; ``lost``: per scenario,
    the runs whose results never came within the side's bound (left out of its figures)."""
    out: dict[str, Any] = {"lost": {}}
    for name, fn in (
        ("sequential", lambda: scenarios.sequential(side, sz)),
        ("fanout", lambda: scenarios.fanout(side, sz)),
        ("fanout_cpu", lambda: scenarios.fanout_cpu(side, sz, r)),
        ("payload", lambda: scenarios.payload(side, sz)),
        ("throughput", lambda: scenarios.throughput(side, sz)),
        ("cost", lambda: scenarios.cost(side, sz, r, work.msglog)),
        ("handoff", lambda: scenarios.handoff(side, sz, work.msglog)),
    ):
        t0, lost = time.perf_counter(), side.lost
        out[name] = fn()
        note = f" ({side.lost - lost} lost)" if side.lost > lost else ""
        log(f"  {side.name} {name}: {time.perf_counter() - t0:.1f}s{note}")
        if side.lost > lost:
            out["lost"][name] = side.lost - lost
    return out


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


LOAD_AT_START = _load()


def machine(server: RedisServer, r: redis.Redis[bytes]) -> dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "CPU cores": str(os.cpu_count()),
        "CPU": cpu or platform.processor() or "?",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis-py": redis.__version__,
        "Redis server": str(r.info("server")["redis_version"]),
        "load average (1/5/15 min), start → end": f"{LOAD_AT_START} → {_load()}",
    }


def _pyspy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        return None
    cmd = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--nonblocking",
        "--format",
        "raw",
        "--rate",
        "200",
        "--output",
        str(out),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# What the worker processes spend busy samples on: (label, frame name, file fragment).
HOT = (
    ("pool child: executing tasks (Celery tracer)", "trace_task", "celery/app/trace.py"),
    ("· StepRun (a step's five phases)", "__call__", "workers/steps.py"),
    ("· · StateStore.begin_step", "begin_step", "orchestration/state/store.py"),
    ("· · StateStore.commit", "commit", "orchestration/state/store.py"),
    ("· · pydantic validation / serialization", "model_", "pydantic/main.py"),
    ("· Signature.apply_async (publishing)", "apply_async", "celery/canvas.py"),
    ("kombu Producer.publish (any process: tasks and events)", "publish", "kombu/messaging.py"),
    ("· · task-sent event", "send_event", "celery/"),
    ("· redis-py: waiting for replies", "read_response", "redis/"),
    ("consumer (parent): event loop", "asynloop", "celery/worker/loops.py"),
    ("· task events (EventDispatcher)", "send", "celery/events/dispatcher.py"),
)


def _hot_functions(raw: Path) -> list[tuple[str, float]]:
    """Inclusive share of the workers' busy py-spy samples for the frames that matter."""
    if not raw.exists():
        return []
    total = 0
    hits: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for label, name, where in HOT:
            if any(f.split(" (")[0].split(".")[-1].startswith(name) and where in f for f in frames):
                hits[label] += n
    return [(label, hits[label] / total) for label, _, _ in HOT if total and hits[label]]


def profile_session(side: BatonSide, sz: Sizes, work: Workdir) -> dict[str, Any]:
    """Per-step time breakdown of Baton: wrappers in the client and workers, py-spy on them.

    ``side`` was started with ``BENCH_PROFILE`` set, so its workers have the wrappers.
    """
    import statistics

    where = work.root / "profile"
    assert side.orch and side.workers
    orch = side.orch
    definition = {
        "name": "profile",
        "steps": [
            {"agent_id": "bench", "task_type": "noop", "output_key": f"s{i}"}
            for i in range(1, sz.steps + 1)
        ],
    }
    client: dict[str, list[float]] = {}
    try:
        side.sequential(sz.steps)
        profiling.install(profiling.CLIENT_PHASES)
        for old in where.glob("steps-*.jsonl"):
            old.unlink()
        for _ in range(sz.profile_runs):
            profiling.phases.clear()
            t0 = time.perf_counter()
            wid = orch.run_workflow(definition)
            total = time.perf_counter() - t0
            in_run = sum(profiling.phases.values())  # (wait's own reads come after)
            ctx = orch.wait(wid, timeout=60)
            returned = time.time()
            for name, sec in profiling.phases.items():
                client.setdefault(name, []).append(sec * 1000)
            other = total - in_run
            client.setdefault("client_other", []).append(other * 1000)
            client.setdefault("client_total", []).append(total * 1000)
            wait = (returned - ts(ctx.finished_at or "")) * 1000
            client.setdefault("client_wait", []).append(wait)
        time.sleep(0.3)  # let the last postrun records land
        worker_phases = profiling.breakdown(where)
        # py-spy samples a second batch only: sampling slows the processes it watches.
        spy = _pyspy(side.workers.processes[0].pid, work.root / "pyspy.txt")
        time.sleep(0.5)
        for _ in range(max(1, sz.profile_runs // 2)):
            side.sequential(sz.steps)
        if spy:
            time.sleep(0.5)
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
    finally:
        profiling.uninstall()
    med = {k: statistics.median(v) for k, v in client.items()}
    order = [k for k, _ in [(p[3], 0) for p in profiling.CLIENT_PHASES]]
    phases = {
        k: med[k] for k in dict.fromkeys([*order, "client_other", "client_total"]) if k in med
    }
    phases.update(worker_phases)
    phases["client_wait"] = med["client_wait"]
    return {
        "runs": sz.profile_runs,
        "phases": phases,
        "top": _hot_functions(work.root / "pyspy.txt"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "docs",
        help="where benchmarks.md/png go (default: docs/)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="override the repeat count")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--only",
        choices=["io", "waits", "maps", "map_limits", "failover"],
        help="only these scenarios (io: bench/io.py's, waits: bench/waits.py's, maps:"
        " bench/maps.py's, map_limits: bench/map_limits.py's, failover: bench/failover.py's);"
        " the report goes to benchmarks-<that>.md",
    )
    parser.add_argument(
        "--soak",
        type=int,
        metavar="FAULTS",
        help="section 12's soak at this many primary kills and freezes (3 : 1) in runs of"
        " 1,000 workflows (40: the full soak, about ten minutes more). Default: a short"
        " soak (runs of 200, 8 faults)",
    )
    args = parser.parse_args(argv)
    sz = Sizes.quick() if args.quick else Sizes()
    io_sz = iobench.IOSizes.quick() if args.quick else iobench.IOSizes()
    if args.repeats:
        sz = Sizes(**{**asdict(sz), "repeats": args.repeats})
        io_sz = io_sz.with_repeats(args.repeats)

    t_start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="baton-bench-"))
    server = RedisServer(root / "redis").start()
    r = redis.Redis.from_url(server.url)
    work = Workdir(root, server.url)
    log(f"work dir {root}; redis-server on port {server.port}")
    results: dict[str, list[dict[str, Any]]] = {"baton": [], "celery": []}
    memory: dict[str, list[dict[str, Any]]] = {"baton": [], "celery": []}
    prof: dict[str, Any] = {}
    try:
        if not args.only:
            prof = core_sessions(sz, r, work, results, memory)
        io_results: dict[str, Any] = {}
        if args.only in (None, "io"):
            log("io scenarios: concurrency, limit, stream")
            io_results = iobench.run(work, r, io_sz, log)
        waits_results: list[dict[str, Any]] = []
        if args.only in (None, "waits"):
            log("waits scenarios: signal latency, sleepers")
            waits_results = waitsbench.run(root / "waits", 1 if args.quick else 2, args.quick)
        maps_results: list[dict[str, Any]] = []
        if args.only in (None, "maps"):
            log("maps scenarios: a map vs chords, scaling with the count")
            maps_results = mapsbench.run(root / "maps", 1 if args.quick else 2, args.quick)
        limits_results: dict[str, Any] = {}
        if args.only in (None, "map_limits"):
            log("map_limits scenarios: rate and concurrency limits inside maps")
            limits_results = map_limits(args.quick)
        failover_results: dict[str, Any] = {}
        if args.only == "failover" or (args.only is None and not args.quick):
            log("failover scenarios: WAIT's overhead, failover time, soak")
            failover_results = failover(root / "failover", args.quick, args.soak)
        info = machine(server, r)
    finally:
        r.close()
        server.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    data = {
        "sizes": asdict(sz),
        "machine": info,
        "results": results,
        "memory": memory,
        "profile": prof,
        "io": io_results,
        "waits": waits_results,
        "maps": maps_results,
        "map_limits": limits_results,
        "failover": failover_results,
        "run_seconds": RUN_SECONDS,
        "elapsed_s": time.perf_counter() - t_start,
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only == "failover":
        from bench import failover as fo

        written = args.out / "benchmarks-failover.md"
        written.write_text(fo.only_markdown(data))
    elif args.only:
        written = args.out / f"benchmarks-{args.only}.md"
        written.write_text(report.only_markdown(data, args.only))
    else:
        written = args.out / "benchmarks.md"
        written.write_text(with_failover(report.markdown(data), failover_results))
        report.plot(results, args.out / "benchmarks.png")
    raw = ""
    if args.keep:  # the raw figures, for re-rendering the report, kept with the work dir
        (root / "results.json").write_text(json.dumps(data, indent=1, default=str))
        raw = f" (raw results: {root / 'results.json'})"
    log(f"wrote {written} in {data['elapsed_s']:.0f}s{raw}")
    return 0


def map_limits(quick: bool) -> dict[str, Any]:
    """Section 11 (bench/map_limits.py, imported here: it registers its agents)."""
    from bench import map_limits as limits

    sz = limits.LimitSizes.quick() if quick else limits.LimitSizes()
    return limits.run(sz, log)


def failover(root: Path, quick: bool, soak: int | None) -> dict[str, Any]:
    """Section 12 (bench/failover.py, imported here: it needs tests/ha.py's cluster);
    ``soak``: the soak's faults, in runs of the full soak's size. Left out of the full
    ``--quick`` run: its kills and freezes take a minute whatever the sizes."""
    from bench import failover as fo

    sz = fo.FailoverSizes.quick() if quick else fo.FailoverSizes()
    return fo.run(root, sz if soak is None else sz.soak(soak), log)


def with_failover(text: str, res: dict[str, Any]) -> str:
    """The full report with section 12 after section 11 (before the profile)."""
    if not res:
        return text
    from bench import failover as fo

    marker = "\n## Where a Baton step's time goes"
    head, found, tail = text.partition(marker)
    return f"{head.rstrip(chr(10))}\n\n{fo.section(res).rstrip(chr(10))}\n{found}{tail}"


def core_sessions(
    sz: Sizes,
    r: redis.Redis[bytes],
    work: Workdir,
    results: dict[str, list[dict[str, Any]]],
    memory: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """The no-op scenarios (1-7), memory and the profile; fills ``results`` and ``memory``,
    returns the profile."""
    # Memory needs a short retention, so it gets its own sessions; Baton's doubles as
    # the profiling session (wrappers on), which saves a worker start. ``--quick`` runs
    # everything in those two sessions (its batches finish well within the retention).
    ttl = {
        "BATON_RETENTION_SECONDS": str(sz.retention),
        "BATON_RESULT_EXPIRES": str(sz.retention),
    }
    prof_env = {**ttl, "BENCH_PROFILE": str(work.root / "profile")}
    for rep in range(0 if sz.single_session else sz.repeats):
        order: list[type[BatonSide] | type[BareSide]] = [BatonSide, BareSide]
        if rep % 2:
            order.reverse()
        for cls in order:
            side = cls(work)
            log(f"repeat {rep + 1}/{sz.repeats}: {side.name}")
            side.start()
            try:
                results[side.name].append(run_session(side, sz, r, work))
            finally:
                side.stop()
                r.flushall()
    bare = BareSide(work, ttl)
    log("memory: celery")
    bare.start()
    try:
        if sz.single_session:
            results["celery"].append(run_session(bare, sz, r, work))
        memory["celery"].append(scenarios.memory(bare, sz, r, sz.retention))
    finally:
        bare.stop()
        r.flushall()
    baton = BatonSide(work, prof_env)
    log("memory + profile: baton")
    baton.start()
    try:
        if sz.single_session:
            results["baton"].append(run_session(baton, sz, r, work))
        memory["baton"].append(scenarios.memory(baton, sz, r, sz.retention))
        prof = profile_session(baton, sz, work)
    finally:
        baton.stop()
        r.flushall()
    return prof


if __name__ == "__main__":
    sys.exit(main())
