"""What one Redis primary carries, measured: commands, round trips and CPU per step.

``python -m bench.capacity [--workflows 500] [--repeats 5] [--out docs/scaling.md] [--json F]``
starts a private redis-server (and, for the second set-up, a replica of it with
``BATON_MIN_REPLICAS=1``), the engine's real workers (one ``baton worker`` process of
concurrency 2, as ``bench/sides.py``'s ``BatonSide``), and runs a batch of ``--workflows``
workflows of ``--steps`` no-op steps (``bench/agents.py`` ``noop``) submitted at once, then
waited for. Around the batch it reads the server's ``INFO commandstats``, ``INFO stats``
(``total_reads_processed``: one read event per request or pipeline, a round trip) and
``INFO cpu`` (``CONFIG RESETSTAT`` before), with the workers' idle traffic (BRPOP timeouts,
heartbeats, timer sweeps), measured over an idle window just before, subtracted pro rata.

Two smaller batches, timed by no one, say the rest: one with every command in the slow
log, for each script's time per call as the server measured it; one under ``MONITOR``, for
which script each ``EVALSHA`` is, which commands each script runs, and which process sent
each command: the client (``run_workflow`` and ``wait``) or the workers.

The machine may be shared: a batch starts once the rest of it uses under ``--quiet`` cores,
one during which it used over ``--noisy`` is run again (up to ``--attempts`` times), and
what it used meanwhile is reported. The set-ups are interleaved repeat by repeat, each
on fresh servers and workers. The figures go to ``--json`` (if given) and, as a Markdown
section, into ``--out`` between the markers ``<!-- capacity:start -->`` and
``<!-- capacity:end -->`` (the rest of the file is left as it is); ``--render F`` writes
that section again from figures saved by ``--json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.model.names import lua_prelude
from orchestration.settings import BatonSettings
from orchestration.state.scripts.call import SCRIPTS, _lua, _source

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bench"
CONCURRENCY = 2
START = "<!-- capacity:start -->"
END = "<!-- capacity:end -->"
#: Our own commands, not the engine's: left out of every count.
OWN = {"info", "config", "config|resetstat", "monitor", "echo", "ping", "slowlog"}
DONE = "capacity-monitor-done"


def log(msg: str) -> None:
    print(f"[bench.capacity {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Setup:
    """One arrangement of Redis: how many replicas, and how many a write waits for."""

    name: str
    replicas: int
    min_replicas: int


SETUPS = (
    Setup("one primary", replicas=0, min_replicas=0),
    Setup("primary + 1 replica, BATON_MIN_REPLICAS=1", replicas=1, min_replicas=1),
)


# --------------------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """A process and its descendants."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out += tree(int(child))
    return out


def client_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores; /proc/stat)."""
    cols = [int(c) for c in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = cols[3] + cols[4]  # idle, iowait
    return (sum(cols[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def local_ports(pids: Iterable[int], server_port: int) -> set[int]:
    """The local ports of these processes' TCP connections to the server (/proc)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[9] in inodes and int(cols[2].rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


# --------------------------------------------------------------------------- counters


@dataclass
class Sample:
    """The server's counters, and the CPU of everyone, at one moment."""

    at: float
    redis_cpu: float  # s, the whole server process (its background threads included)
    redis_main: float  # s, its main thread (nan if the server does not say)
    reads: int
    calls: dict[str, int]
    usec: dict[str, int]
    workers_cpu: float
    client_cpu: float
    replica_cpu: float
    machine: float


def sample(r: redis.Redis[bytes], worker_pids: list[int], replica_pids: list[int]) -> Sample:
    cpu = r.info("cpu")
    stats = r.info("stats")
    cmd = r.info("commandstats")
    main = float(cpu.get("used_cpu_sys_main_thread", "nan")) + float(
        cpu.get("used_cpu_user_main_thread", "nan")
    )
    return Sample(
        at=time.perf_counter(),
        redis_cpu=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        redis_main=main,
        reads=int(stats["total_reads_processed"]),
        calls={k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in cmd.items()},
        usec={k.removeprefix("cmdstat_"): int(v["usec"]) for k, v in cmd.items()},
        workers_cpu=sum(cpu_seconds(p) for w in worker_pids for p in tree(w)),
        client_cpu=client_cpu(),
        replica_cpu=sum(cpu_seconds(p) for p in replica_pids),
        machine=machine_busy(),
    )


@dataclass
class Window:
    """What happened between two samples."""

    seconds: float
    redis_cpu: float
    redis_main: float
    reads: int
    calls: dict[str, int]
    usec: dict[str, int]
    workers_cpu: float
    client_cpu: float
    replica_cpu: float
    others_cpu: float  # s: what the rest of the machine used meanwhile


def window(rig: Rig, work: Callable[[], None]) -> Window:
    assert rig.r is not None
    pids, replicas = rig.worker_pids(), rig.replica_pids()
    rig.r.config_resetstat()
    a = sample(rig.r, pids, replicas)
    work()
    b = sample(rig.r, pids, replicas)
    names = set(b.calls) - OWN
    return Window(
        seconds=b.at - a.at,
        redis_cpu=b.redis_cpu - a.redis_cpu,
        redis_main=b.redis_main - a.redis_main,
        reads=b.reads - a.reads,
        calls={c: b.calls[c] - a.calls.get(c, 0) for c in names},
        usec={c: b.usec[c] - a.usec.get(c, 0) for c in names},
        workers_cpu=b.workers_cpu - a.workers_cpu,
        client_cpu=b.client_cpu - a.client_cpu,
        replica_cpu=b.replica_cpu - a.replica_cpu,
        others_cpu=(b.machine - a.machine)
        - sum(
            getattr(b, k) - getattr(a, k)
            for k in ("redis_cpu", "workers_cpu", "client_cpu", "replica_cpu")
        ),
    )


# --------------------------------------------------------------------------- a set-up


def script_names() -> dict[str, str]:
    """sha1 -> script name, for every script the engine registers."""
    sources = {name: _source(name) for name in SCRIPTS}
    sources |= {n: "\n".join([lua_prelude(), _lua(n)]) for n in ("limit", "claim")}
    return {hashlib.sha1(s.encode()).hexdigest(): n for n, s in sources.items()}


@dataclass
class Rig:
    """A primary (and its replicas), an orchestrator, and one worker process."""

    root: Path
    setup: Setup
    primary: RedisServer | None = None
    replicas: list[RedisServer] = field(default_factory=list)
    orch: WorkflowOrchestrator | None = None
    workers: LocalWorkers | None = None
    r: redis.Redis[bytes] | None = None

    def start(self) -> Rig:
        self.primary = RedisServer(self.root / "primary").start()
        self.r = redis.Redis.from_url(self.primary.url)
        for i in range(self.setup.replicas):
            replica = RedisServer(
                self.root / f"replica{i}",
                extra_args=("--replicaof", "127.0.0.1", str(self.primary.port)),
            ).start()
            self.replicas.append(replica)
        deadline = time.monotonic() + 30
        while int(self.r.info("replication")["connected_slaves"]) < self.setup.replicas:
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not connect")
            time.sleep(0.1)
        home = self.root / "home"
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {
            "PYTHONPATH": path,
            "BATON_AGENT_MODULES": "bench.agents",
            "BATON_KEY_PREFIX": PREFIX,
            "BATON_HOME": str(home),
            "BATON_MIN_REPLICAS": str(self.setup.min_replicas),
        }
        settings = BatonSettings(
            redis_url=self.primary.url,
            key_prefix=PREFIX,
            home=home,
            agent_modules=["bench.agents"],
            min_replicas=self.setup.min_replicas,
        )
        self.orch = WorkflowOrchestrator(self.primary.url, settings=settings, local_workers=False)
        self.workers = LocalWorkers(
            self.primary.url,
            [["bench"]],
            concurrency=CONCURRENCY,
            env=env,
            log_dir=self.root / "logs",
        ).start(self.orch.app)
        return self

    def stop(self) -> None:
        if self.workers:
            self.workers.stop()
        if self.orch:
            self.orch.close()
        if self.r is not None:
            self.r.close()
        for server in [*self.replicas, *([self.primary] if self.primary else [])]:
            server.stop()

    def worker_pids(self) -> list[int]:
        assert self.workers
        return [p.pid for p in self.workers.processes]

    def replica_pids(self) -> list[int]:
        return [s.process.pid for s in self.replicas if s.process]

    def batch(self, n: int, steps: int) -> None:
        """``n`` workflows of ``steps`` no-ops, submitted at once, then each waited for."""
        assert self.orch
        definition = {
            "name": "capacity",
            "steps": [
                {"agent_id": "bench", "task_type": "noop", "output_key": f"s{i}"}
                for i in range(1, steps + 1)
            ],
        }
        wids = [self.orch.run_workflow(definition) for _ in range(n)]
        for wid in wids:
            ctx = self.orch.wait(wid, timeout=300)
            if ctx.status.value != "completed":
                raise RuntimeError(f"workflow {wid} ended {ctx.status.value}: {ctx.error}")


def quiet(rig: Rig, limit: float, most: float) -> float:
    """Wait (up to ``most`` s) until the rest of the machine uses under ``limit`` cores
    over 2 s while the rig idles (a test suite or a build in the same minutes would be
    measured as the engine's time); what it used over the last 2 s."""
    deadline = time.monotonic() + most
    while True:
        others = window(rig, lambda: time.sleep(2.0)).others_cpu / 2.0
        if others < limit or time.monotonic() > deadline:
            return others
        log(f"  waiting for a quiet machine: others use {others:.2f} cores")
        time.sleep(5.0)


def measure(rig: Rig, n: int, steps: int, idle_s: float) -> dict[str, Any]:
    """One timed batch: figures per step, idle traffic subtracted pro rata."""
    idle = window(rig, lambda: time.sleep(idle_s))
    busy = window(rig, lambda: rig.batch(n, steps))
    total = n * steps
    scale = busy.seconds / idle.seconds

    def net(b: float, i: float) -> float:
        return max(0.0, b - i * scale) / total

    calls = {c: net(v, idle.calls.get(c, 0)) for c, v in busy.calls.items()}
    usec = {c: net(v, idle.usec.get(c, 0)) for c, v in busy.usec.items()}
    redis_us = net(busy.redis_cpu, idle.redis_cpu) * 1e6
    return {
        "steps": total,
        "wall_s": busy.seconds,
        "steps_per_s": total / busy.seconds,
        "redis_cpu_us": redis_us,
        "redis_main_us": net(busy.redis_main, idle.redis_main) * 1e6,
        "redis_busy": busy.redis_cpu / busy.seconds,  # cores
        "redis_capacity": 1e6 / redis_us,
        "round_trips": net(busy.reads, idle.reads),
        "commands": sum(calls.values()),
        "calls": {c: v for c, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v > 0},
        "usec": usec,
        "evalsha_us": usec.get("evalsha", 0.0),
        "workers_cpu_us": busy.workers_cpu / total * 1e6,
        "client_cpu_us": busy.client_cpu / total * 1e6,
        "replica_cpu_us": net(busy.replica_cpu, idle.replica_cpu) * 1e6,
        "others_busy": max(0.0, busy.others_cpu) / busy.seconds,  # cores
        "idle_per_s": {
            "commands": sum(idle.calls.values()) / idle.seconds,
            "round_trips": idle.reads / idle.seconds,
            "redis_cpu": idle.redis_cpu / idle.seconds,
        },
        "load": os.getloadavg()[0],
    }


# --------------------------------------------------------------------------- MONITOR

LINE = re.compile(rb'^[\d.]+ \[\d+ ([^\]]*)\] "([^"]*)"(?: "([^"]*)")?')


def attribute(rig: Rig, n: int, steps: int) -> dict[str, Any]:
    """A batch under MONITOR: each command by origin (client, workers) and, for EVALSHA,
    by script; and the commands each script runs. Counts per step.

    A script's commands show after its ``EVALSHA``, from ``lua`` (it runs whole: nothing
    comes in between); a transaction's between its client's ``MULTI`` and ``EXEC``."""
    assert rig.primary is not None and rig.r is not None
    shas = script_names()
    port = rig.primary.port
    origins: dict[int, str] = {}
    stop = threading.Event()

    def watch_ports() -> None:
        while not stop.is_set():
            for p in local_ports([os.getpid()], port):
                origins.setdefault(p, "client")
            for w in rig.worker_pids():
                for p in local_ports(tree(w), port):
                    origins.setdefault(p, "workers")
            stop.wait(0.05)

    top: Counter[tuple[str, str]] = Counter()  # (origin, command or script) -> calls
    inner: dict[str, Counter[str]] = defaultdict(Counter)  # script -> command -> calls
    queued: Counter[str] = Counter()  # command -> calls run by an EXEC
    lines: list[bytes] = []
    ready = threading.Event()

    def read() -> None:
        conn = redis.Connection(host="127.0.0.1", port=port)
        conn.send_command("MONITOR")
        conn.read_response()  # OK
        ready.set()
        while True:
            raw = conn.read_response()
            if isinstance(raw, bytes):
                if DONE.encode() in raw:
                    break
                lines.append(raw)
        conn.disconnect()

    watcher = threading.Thread(target=watch_ports, daemon=True)
    reader = threading.Thread(target=read, daemon=True)
    watcher.start()
    reader.start()
    ready.wait(10)
    time.sleep(0.2)
    rig.batch(n, steps)
    rig.r.echo(DONE)
    reader.join(120)
    stop.set()
    watcher.join()
    script = "?"
    in_multi: set[str] = set()  # the clients between their MULTI and EXEC
    for raw in lines:
        m = LINE.match(raw)
        if not m:
            continue
        who, cmd = m.group(1).decode(), m.group(2).decode().lower()
        if cmd in OWN:
            continue
        if who == "lua":
            inner[script][cmd] += 1
            continue
        if cmd == "multi":
            in_multi.add(who)
        elif cmd in ("exec", "discard"):
            in_multi.discard(who)
        elif who in in_multi:
            queued[cmd] += 1
            continue
        origin = origins.get(int(who.rsplit(":", 1)[1]), "other") if ":" in who else "other"
        if cmd == "evalsha":
            script = shas.get((m.group(3) or b"").decode(), "?")
            top[(origin, f"evalsha {script}")] += 1
        else:
            script = "?"
            top[(origin, cmd)] += 1
    total = n * steps
    runs = {s: v for (o, s), v in top.items() if s.startswith("evalsha ")}
    by_cmd: Counter[str] = Counter()
    for (_, c), v in top.items():
        by_cmd["evalsha" if c.startswith("evalsha ") else c] += v
    within: Counter[str] = Counter()
    for cs in inner.values():
        within.update(cs)
    every = by_cmd + within + queued
    return {
        "steps": total,
        # Of each command's calls, the share a client sent on its own, and the share a
        # script ran (the rest an EXEC ran): ``INFO commandstats`` times a script's
        # commands, and a transaction's, in the EVALSHA or EXEC too.
        "top_share": {c: by_cmd[c] / v for c, v in every.items()},
        "script_share": {c: within[c] / v for c, v in every.items()},
        "top": {f"{o}|{c}": v / total for (o, c), v in top.most_common()},
        "inner": {
            s: {c: v / runs.get(f"evalsha {s}", 1) for c, v in cs.most_common()}
            for s, cs in inner.items()
        },
        "script_runs": {s.removeprefix("evalsha "): v / total for s, v in runs.items()},
        # Transactions: how many per step, and the commands each runs.
        "exec_runs": by_cmd["exec"] / total,
        "queued": {c: v / max(1, by_cmd["exec"]) for c, v in queued.most_common()},
    }


def script_times(rig: Rig, n: int, steps: int) -> dict[str, dict[str, float]]:
    """A batch with every command in the slow log: each script's calls per step and its
    time per call (µs, median and mean), as the server timed it."""
    assert rig.r is not None
    r = rig.r
    shas = script_names()
    r.config_set("slowlog-max-len", 1_000_000)
    r.config_set("slowlog-log-slower-than", 0)
    r.slowlog_reset()
    try:
        rig.batch(n, steps)
        entries = r.slowlog_get(1_000_000)
    finally:
        r.config_set("slowlog-log-slower-than", 10_000)
        r.slowlog_reset()
    times: dict[str, list[int]] = defaultdict(list)
    for e in entries:
        args = bytes(e["command"]).split(b" ", 2)
        if args[0].lower() == b"evalsha" and len(args) > 1:
            times[shas.get(args[1].decode(), "?")].append(int(e["duration"]))
    return {
        name: {
            "calls": len(us) / (n * steps),
            "median_us": statistics.median(us),
            "mean_us": statistics.fmean(us),
        }
        for name, us in times.items()
    }


# --------------------------------------------------------------------------- report


def med(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], fmt: str) -> str:
    """The median, with min-max in parentheses when there is more than one."""
    text = format(med(values), fmt)
    if len(values) > 1:
        text += f" ({format(min(values), fmt)}–{format(max(values), fmt)})"
    return text


def markdown(results: dict[str, Any]) -> str:
    runs: dict[str, list[dict[str, Any]]] = results["runs"]
    attr: dict[str, dict[str, Any]] = results["monitor"]
    names = list(runs)
    a = results["args"]
    out = [
        START,
        "## Capacity of one primary, measured",
        "",
        f"Written by `python -m bench.capacity` on {results['when']}, {results['cores']} cores,"
        f" redis-server {results['redis_version']} (AOF on, `appendfsync everysec`):"
        f" {a['workflows']} workflows of {a['steps']} no-op steps (`bench/agents.py` `noop`),"
        f" submitted at once and waited for, on one `baton worker` process of concurrency"
        f" {CONCURRENCY}; the median of {a['repeats']} repeats, min–max in parentheses, each"
        " set-up on fresh servers, the set-ups interleaved. The machine is shared: each batch"
        f" starts once the rest of it uses under {a['quiet']:g} cores, one during which it"
        f" used over {a.get('noisy', 0):g} is run again (up to {a.get('attempts', 1)} times),"
        " and the last row says what it used during the batch. Per step means per no-op step, the"
        " workflow's creation, its end and the client's `wait` included (a fifth of each per"
        " step). The workers' idle traffic (BRPOP timeouts, heartbeats, timer sweeps), measured"
        f" over an idle window of {a['idle']:g} s just before, is subtracted pro rata."
        " *Round trips* are `total_reads_processed` (one read event per request or pipeline);"
        " *commands* are `INFO commandstats` calls, which count the commands a script runs as"
        " well as the `EVALSHA`; *Redis CPU* is `INFO cpu` (user + system, the whole process).",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]

    def row(label: str, key: str, fmt: str) -> None:
        cells = []
        for n in names:
            values = [r[key] for r in runs[n]]
            cells.append(spread(values, fmt) if any(values) else "–")
        out.append(f"| {label} | " + " | ".join(cells) + " |")

    row("end to end, steps/s (this machine)", "steps_per_s", ",.0f")
    row("Redis CPU, µs per step", "redis_cpu_us", ".0f")
    row("**steps/s one Redis core carries** (10⁶ ÷ µs)", "redis_capacity", ",.0f")
    row("Redis executing commands, µs per step (scripts whole)", "exec_us", ".0f")
    row("… of which in scripts (`EVALSHA`)", "evalsha_us", ".0f")
    row("… … of which the commands the scripts run", "inner_us", ".0f")
    row("steps/s if only command execution cost (10⁶ ÷ µs)", "exec_capacity", ",.0f")
    row("round trips per step", "round_trips", ".2f")
    row("commands per step", "commands", ".1f")
    row("Redis busy during the batch, cores", "redis_busy", ".2f")
    row("workers' CPU, µs per step (one process, its pool)", "workers_cpu_us", ",.0f")
    row("client's CPU, µs per step (`run_workflow`, `wait`)", "client_cpu_us", ",.0f")
    row("replica's CPU, µs per step", "replica_cpu_us", ".0f")
    row("other processes on the machine meanwhile, cores", "others_busy", ".2f")
    out += [
        "",
        "Commands per step, by command (`INFO commandstats`, median; those under 0.05 left out):",
        "",
        "| command | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    commands: Counter[str] = Counter()
    for n in names:
        for r in runs[n]:
            for c, v in r["calls"].items():
                commands[c] = max(commands[c], v)
    for c, _ in commands.most_common():
        vals = [med([r["calls"].get(c, 0.0) for r in runs[n]]) for n in names]
        if max(vals) >= 0.05:
            out.append(f"| `{c}` | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    out += [
        "",
        f"Who sends what, per step (a batch of {a['monitor']} workflows under `MONITOR`,"
        " each command's sender told by its connection's port; `EVALSHA` by script):",
        "",
        "| sent by | command | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    keys: Counter[str] = Counter()
    for n in names:
        keys.update(attr[n]["top"])
    for k, _ in sorted(keys.items(), key=lambda kv: (kv[0].split("|")[0], -kv[1])):
        origin, cmd = k.split("|", 1)
        vals = [attr[n]["top"].get(k, 0.0) for n in names]
        if max(vals) >= 0.05:
            out.append(f"| {origin} | `{cmd}` | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    times: dict[str, dict[str, dict[str, float]]] = results["scripts"]
    out += [
        "",
        f"Each script's time in the server, per call (a batch of {a['monitor']} workflows with"
        " every command in the slow log: median, mean in parentheses):",
        "",
        "| script | calls per step | " + " | ".join(f"µs per call, {n}" for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for sc, t in sorted(times[names[0]].items(), key=lambda kv: -kv[1]["calls"]):
        cells = [
            f"{times[n][sc]['median_us']:.0f} ({times[n][sc]['mean_us']:.0f})"
            if sc in times[n]
            else "–"
            for n in names
        ]
        out.append(f"| `{sc}` | {t['calls']:.2f} | " + " | ".join(cells) + " |")
    first = names[0]
    out += [
        "",
        "What each script (and transaction) runs inside, per call (the first set-up's batch"
        " under `MONITOR`):",
        "",
        "| script | calls per step | commands inside, per call |",
        "|---|---|---|",
    ]
    for s, per in sorted(attr[first]["script_runs"].items(), key=lambda kv: -kv[1]):
        inside = attr[first]["inner"].get(s, {})
        text = ", ".join(f"{c} {v:.1f}" for c, v in inside.items() if v >= 0.05)
        out.append(f"| `{s}` | {per:.2f} | {sum(inside.values()):.1f}: {text} |")
    queued: dict[str, float] = attr[first].get("queued", {})
    if queued:
        text = ", ".join(f"{c} {v:.1f}" for c, v in queued.items() if v >= 0.05)
        out.append(
            f"| `MULTI … EXEC` | {attr[first]['exec_runs']:.2f} |"
            f" {sum(queued.values()):.1f}: {text} |"
        )
    out += ["", END]
    return "\n".join(out)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workflows", type=int, default=500)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--idle", type=float, default=3.0, help="idle window (s)")
    ap.add_argument("--monitor", type=int, default=100, help="workflows under MONITOR")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument(
        "--quiet",
        type=float,
        default=0.25,
        help="wait until the rest of the machine uses fewer cores than this",
    )
    ap.add_argument("--quiet-wait", type=float, default=1800.0, help="the most waited (s)")
    ap.add_argument(
        "--noisy",
        type=float,
        default=0.4,
        help="a batch during which the rest of the machine used more cores is run again",
    )
    ap.add_argument("--attempts", type=int, default=5, help="the most a batch is run")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "scaling.md")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument(
        "--render", type=Path, default=None, help="measure nothing: write --out from this JSON"
    )
    args = ap.parse_args()
    if args.render:
        results = json.loads(args.render.read_text())
    else:
        results = measure_all(args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    write_section(args.out, markdown(results))
    log(f"wrote {args.out}")


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every set-up, ``args.repeats`` times, interleaved: the figures."""
    # SIGTERM (and SIGINT, which a background job ignores) end the run through its
    # ``finally`` blocks: the servers and workers it started are stopped, not orphaned.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupted)
    base = Path(tempfile.mkdtemp(prefix="baton-capacity-"))
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in SETUPS}
    monitor: dict[str, dict[str, Any]] = {}
    scripts: dict[str, dict[str, dict[str, float]]] = {}
    version = "?"
    try:
        for rep in range(args.repeats):
            for i, setup in enumerate(SETUPS):
                rig = Rig(base / f"{rep}-{i}", setup)
                try:
                    rig.start()
                    assert rig.r is not None
                    version = str(rig.r.info("server")["redis_version"])
                    rig.batch(args.warmup, args.steps)
                    for attempt in range(1, args.attempts + 1):
                        quiet(rig, args.quiet, args.quiet_wait)
                        figures = measure(rig, args.workflows, args.steps, args.idle)
                        figures["attempt"] = attempt
                        if figures["others_busy"] < args.noisy or attempt == args.attempts:
                            break
                        log(
                            f"  {setup.name}: others used {figures['others_busy']:.2f} cores"
                            " during the batch; again"
                        )
                    runs[setup.name].append(figures)
                    log(
                        f"{setup.name}, repeat {rep + 1}: {figures['steps_per_s']:.0f} steps/s,"
                        f" Redis {figures['redis_cpu_us']:.0f} µs/step"
                        f" ({figures['redis_capacity']:.0f} steps/s a core),"
                        f" {figures['commands']:.1f} commands,"
                        f" {figures['round_trips']:.2f} round trips per step"
                    )
                    if setup.name not in monitor:
                        scripts[setup.name] = script_times(rig, args.monitor, args.steps)
                        monitor[setup.name] = attribute(rig, args.monitor, args.steps)
                finally:
                    rig.stop()
                shutil.rmtree(rig.root, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": os.cpu_count(),
        "redis_version": version,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": runs,
        "monitor": monitor,
        "scripts": scripts,
    }
    for name, rs in runs.items():
        share = monitor[name]["top_share"]
        for r in rs:  # scripts counted whole, their commands not again
            r["exec_us"] = sum(v * share.get(c, 1.0) for c, v in r["usec"].items())
            in_scripts = monitor[name]["script_share"]
            r["inner_us"] = sum(v * in_scripts.get(c, 0.0) for c, v in r["usec"].items())
            r["exec_capacity"] = 1e6 / r["exec_us"]
    return results


if __name__ == "__main__":
    main()
