"""Section 12 of ``python -m bench`` (``--only failover``): what Redis failover costs Baton.

Issue 23 made every write wait for ``BATON_MIN_REPLICAS`` replicas (``WAIT`` in the same
round trip as the script) and made clients follow the Sentinels through a failover. That
is only worth having if it is cheap when nothing fails, quick when the primary dies, and
never loses an acknowledged commit. Three scenarios, each on real processes on loopback:

a. **Replica-acknowledged commit overhead.** A primary and one ``replicaof`` replica (plain
   ``redis-server``\\ s, no Sentinels: only ``WAIT`` differs). The 5-step no-op chain of
   section 1 (``bench/sides.py`` ``BatonSide.sequential``), one workflow at a time, with
   ``BATON_MIN_REPLICAS=1`` and ``=0`` (the client too), and as a bare Celery chain for
   the ratio the other sections give: the three worker sessions run at once, each on a
   database of its own, their chains interleaved one by one, so that the 0.5 ms looked
   for is not lost in the load of a shared machine changing between sessions. Per step:
   the chain's wall time ÷ 5, and the first step's commit to the last's ÷ 4 (the
   workflow's history). ``INFO commandstats`` counts the ``WAIT``\\ s, to show the
   setting took effect in every process.
b. **Failover time.** ``tests/ha.py``'s ``RedisHA`` (three data nodes, three Sentinels,
   ``down-after-milliseconds`` 1000), two ``baton worker`` processes running
   ``tests/failover_agents.py``'s ``ledger.digest`` under a steady load of 5-step
   workflows; the primary is SIGKILLed, and the time runs from its death to the first
   acknowledged commit of a step *begun after it*: the ledger's ``end`` line carries the
   time (``t``) just after the commit's ``WAIT`` was answered, and a step begun after the
   kill can only have committed on the new primary (the first commits of steps caught in
   flight may come a step's time earlier; their ends cannot be told from the last commits
   on the old primary). The killed node is restarted as a replica, and the cluster
   left to settle (every node replicating the primary, the Sentinels knowing a replica
   to promote), between kills.
c. **Soak.** Runs of five-step workflows on the same kind of cluster, while the harness
   alternates faults (kill, kill, freeze, kill, ...): a kill as in (b); a freeze is SIGSTOP
   of the primary for ``down-after`` + 2 s (longer if the failover has not finished by
   then), SIGCONT, and a wait until the thawed node is a replica. Every run is checked
   with the ledger exactly as ``tests/test_failover.py`` is (``tests/ledger_check.py``).

Sizes (``FailoverSizes``): by default 5 repeats of 50 chains (a), 5 kills (b) and a short
soak (c: 8 faults in runs of 200 workflows), about four minutes in all; ``--soak 40`` is
the full soak (30 kills and 10 freezes across runs of 1,000 workflows, faults 250
acknowledged commits apart), about ten minutes more. ``--quick`` (about 80 s, whatever
the sizes: clusters and failovers take their time) is too slow for the bench's smoke
test, so the full ``--quick`` run leaves this section out.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import redis

from bench.scenarios import runs_of
from bench.sides import ROOT, BareSide, BatonSide, Run, Workdir
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.errors import WorkflowNotFound
from orchestration.model import WorkflowStatus
from orchestration.settings import BatonSettings
from orchestration.state.fields import MetaField
from tests.ha import RedisHA
from tests.helpers import eventually
from tests.ledger_check import (
    STEPS,
    Entry,
    acknowledged,
    audit,
    ends_of_runs,
    flow,
    read_ledger,
)

Log = Callable[[str], None]
DOWN_AFTER_MS = 1000
#: The targets: the overhead of WAIT per step at the median (ms), kill to the first commit
#: on the new primary at the median (s), and the full soak's faults and run size.
TARGET_OVERHEAD_MS = 0.5
TARGET_FAILOVER_S = 5.0
FULL_SOAK = {"kills": 30, "freezes": 10, "workflows": 1000}
#: How long a workflow of the soak may take after the last fault of its run before it is
#: counted stuck (the reaper sends on a lost message after ``BATON_STALL_SECONDS``).
STUCK_AFTER_S = 120.0
#: How often the load looks at its workflows' statuses (one pipelined round trip): a
#: workflow that ends is replaced within this, so the load stays steady.
POLL_S = 0.05
TERMINAL = {s.value for s in WorkflowStatus if s.is_terminal}


@dataclass(frozen=True)
class FailoverSizes:
    """How much of each scenario; ``quick()``: tiny sizes (``--quick``), ``soak(n)``: the
    full soak's runs with ``n`` faults."""

    repeats: int = 5  # (a) repeats, each with new worker sessions
    chains: int = 50  # (a) workflows of each setting per repeat
    kills: int = 5  # (b)
    soak_faults: int = 8  # (c) kills and freezes (every fourth, from the third, a freeze)
    soak_workflows: int = 200  # (c) workflows per run
    inflight: int = 12  # (b, c) workflows the load keeps in flight
    steady_commits: int = 40  # (b) acknowledged commits between a recovery and a kill
    soak_steady: int = 40  # (c) the same between faults of the soak

    @classmethod
    def quick(cls) -> FailoverSizes:
        return cls(repeats=1, chains=5, kills=1, soak_faults=3, soak_workflows=30,
                   steady_commits=10, soak_steady=10)  # fmt: skip

    def soak(self, faults: int) -> FailoverSizes:
        """The soak at ``faults`` faults, in runs of the full soak's size, the faults spaced
        by 250 commits (50 workflows' worth): spread over several runs, not crowded into
        the first."""
        return replace(self, soak_faults=faults, soak_workflows=FULL_SOAK["workflows"],
                       soak_steady=250)  # fmt: skip


def fault_kind(i: int) -> str:
    """The ``i``-th fault of a soak: kill, kill, freeze, kill, repeating (3 kills : 1)."""
    return "freeze" if i % 4 == 2 else "kill"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _spread(values: list[float]) -> dict[str, float]:
    """Median, min and max (NaN for none: every run lost)."""
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# --------------------------------------------------------------------------- (a) overhead


@dataclass
class ReplicatedSide(BatonSide):
    """``BatonSide`` whose client writes wait for ``BATON_MIN_REPLICAS`` as its workers'
    do (the client's ``BatonSettings`` come from arguments, not the workers' environment)."""

    def settings(self) -> BatonSettings:
        wait_for = int(self.extra_env["BATON_MIN_REPLICAS"])
        return super().settings().model_copy(update={"min_replicas": wait_for})


def _waits(r: redis.Redis[bytes]) -> int:
    """``WAIT`` calls the server has run since its stats were reset."""
    return int(r.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


def _figures(runs: list[Run], waits: int, chains: int) -> dict[str, Any]:
    """One setting's figures in one repeat: medians over its runs."""
    per_step = [run.latency * 1000 / STEPS for run in runs]
    between = [(run.finished_at - run.first_done_at) * 1000 / (STEPS - 1) for run in runs]
    return {"per_step_ms": _median(per_step), "step_to_step_ms": _median(between),
            "waits_per_workflow": waits / max(1, len(runs)), "runs": len(runs),
            "lost": chains - len(runs)}  # fmt: skip


def overhead(root: Path, sz: FailoverSizes, log: Log) -> dict[str, Any]:
    """(a): per repeat, a worker session of each setting (``min1``, ``min0``, ``celery``)
    at once, each on a database of its own on one primary with one replica, and their
    chains interleaved one by one, the order alternating: the settings are compared under
    the same load of the machine (on a shared 2-core machine, sessions run one after
    another differ by more than the 0.5 ms looked for)."""
    primary = RedisServer(root / "primary").start()
    replica = RedisServer(root / "replica",
                          extra_args=("--replicaof", "127.0.0.1", str(primary.port)))  # fmt: skip
    r = redis.Redis.from_url(primary.url)
    order = ["min1", "min0", "celery"]
    out: dict[str, Any] = {k: [] for k in order}
    try:
        replica.start()
        eventually(lambda: _online_replicas(r) == 1, 30, "the replica to be online")
        base = primary.url.rsplit("/", 1)[0]
        for rep in range(sz.repeats):
            log(f"12a. repeat {rep + 1}/{sz.repeats}: {sz.chains} chains of each, interleaved")
            sides: dict[str, BatonSide | BareSide] = {}
            for db, k in enumerate(order, start=1):
                work = Workdir(root / k, f"{base}/{db}")
                env = {"BATON_MIN_REPLICAS": k[-1]}
                sides[k] = BareSide(work) if k == "celery" else ReplicatedSide(work, env, name=k)
            runs: dict[str, list[Run]] = {k: [] for k in order}
            waits = dict.fromkeys(order, 0)
            try:
                for side in sides.values():
                    side.start()
                    runs_of(side, partial(side.sequential, STEPS), 1)  # (warm-up)
                for i in range(sz.chains):
                    for k in order if i % 2 == 0 else order[::-1]:
                        side = sides[k]
                        r.config_resetstat()
                        runs[k] += runs_of(side, partial(side.sequential, STEPS), 1)
                        waits[k] += _waits(r)
            finally:
                for side in sides.values():
                    side.stop()
                r.flushall()
            for k in order:
                out[k].append(_figures(runs[k], waits[k], sz.chains))
            log("  " + ", ".join(f"{k}: {out[k][-1]['per_step_ms']:.2f} ms/step (step to"
                                 f" step {out[k][-1]['step_to_step_ms']:.2f})"
                                 for k in order))  # fmt: skip
        out["replica_online_after"] = _online_replicas(r) == 1
    finally:
        r.close()
        replica.stop()
        primary.stop()
    return out


def _online_replicas(r: redis.Redis[bytes]) -> int:
    info = r.info("replication")
    return sum(
        1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
        and v.get("state") == "online"
    )  # fmt: skip


# --------------------------------------------------------------------------- the cluster


class Ledger:
    """The ledger file read as it grows (the full soak's is tens of MB: read once), with
    each run paired to its end as ``ends_of_runs`` does, and the acknowledged commits as
    (when the run began, when its commit was acknowledged)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0
        self.commits: list[tuple[float, float]] = []
        self._running: dict[tuple[str, int], Entry] = {}

    def read(self) -> Ledger:
        if not self.path.exists():
            return self
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        whole = data.rfind(b"\n") + 1  # (a line still being written waits for next time)
        self.offset += whole
        for line in data[:whole].splitlines():
            if not line.strip():
                continue
            e = json.loads(line)
            if "run" in e:
                self._running[(e["task"], e["pid"])] = e
            elif (run := self._running.pop((e["end"], e["pid"]), None)) and acknowledged(e):
                self.commits.append((run["t"], e["t"]))
        return self

    def first_commit_begun_after(self, t: float) -> float | None:
        """When the first commit of a run begun after ``t`` was acknowledged."""
        found = [end for began, end in self.read().commits if began > t]
        return min(found) if found else None


class BrokerLog:
    """When a worker's Celery consumer (re)connected to the broker, read from its log as
    it grows: ``Connected to ...`` lines, local time with milliseconds. After a failover
    the consumer's reconnects follow Celery's own backoff (2 s, then 4 s more, ...), which
    is often what the work waits for, not the Sentinels."""

    PATTERN = re.compile(rb"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] "
                         rb"celery\.worker\.consumer\.connection: Connected to", re.M)  # fmt: skip

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0
        self.connected: list[float] = []

    def first_after(self, t: float) -> float | None:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        whole = data.rfind(b"\n") + 1
        self.offset += whole
        for m in self.PATTERN.finditer(data[:whole]):
            when = datetime.strptime(m.group(1).decode(), "%Y-%m-%d %H:%M:%S,%f")
            self.connected.append(when.timestamp())
        return next((c for c in self.connected if c > t), None)


@dataclass
class Cluster:
    """A Sentinel cluster, two ``baton worker`` processes (concurrency 2) on it, the client,
    the ledger the workers write, and their logs."""

    ha: RedisHA
    orch: WorkflowOrchestrator
    workers: LocalWorkers
    ledger: Ledger
    pids: list[int]
    logs: list[BrokerLog]

    def epoch(self) -> int:
        """The service's config-epoch, the highest a Sentinel reports: one step per
        failover (a fault that took more than one shows more)."""
        epochs = []
        for sentinel in self.ha.sentinels:
            with suppress(redis.RedisError):
                epochs.append(int(sentinel.ask("MASTER", self.ha.service)["config-epoch"]))
        return max(epochs)

    def brokers_back(self, t: float, timeout: float = 20.0) -> float | None:
        """Seconds from ``t`` until every worker's consumer had reconnected (None: one
        did not within ``timeout``, or never lost its connection)."""
        try:
            found = eventually(lambda: all(log.first_after(t) for log in self.logs), timeout)
        except AssertionError:
            return None
        assert found
        return max(log.first_after(t) or t for log in self.logs) - t

    def workers_restarted(self) -> int:
        """Worker processes that exited or were replaced since the start (0 is the promise)."""
        now = [p.pid for p in self.workers.processes]
        alive = [p for p in self.workers.processes if p.poll() is None]
        return len(set(self.pids) - set(now)) + len(now) - len(alive)

    def steady(self, commits: int, load: Load, timeout: float = 60.0) -> None:
        """Return once ``commits`` more commits were acknowledged: a fault hits a load that
        is running, not one still recovering from the last fault (or once ``load`` starts
        fewer workflows than a full load: its run is ending, the fault goes to the next)."""
        start = len(self.ledger.read().commits)

        def done() -> bool:
            return len(self.ledger.read().commits) >= start + commits or not load.loaded

        eventually(done, timeout, f"{commits} acknowledged commits")

    def settle(self, timeout: float = 60.0) -> bool:
        """Whether, within ``timeout``, every running node came to replicate the primary and
        every Sentinel to name it and know a replica it could promote: the next fault meets
        a cluster that can fail over. Looked at afresh each time: a second failover may
        change the primary meanwhile. (Not settling is counted, not fatal: the fault's
        figures stand, and the next fault shows whether the cluster recovered.)"""
        ha = self.ha

        def settled() -> bool:
            try:
                primary = ha.wait_replicas_synced(timeout=0.5)
            except AssertionError:
                return False
            for sentinel in ha.sentinels:
                master = sentinel.ask("MASTER", ha.service)
                if (master["ip"], master["port"]) != primary or master["flags"] != "master":
                    return False
                good = [
                    s for s in sentinel.ask("SLAVES", ha.service)
                    if s["flags"] == "slave" and s.get("master-link-status") == "ok"
                ]  # fmt: skip
                if not good or master["num-other-sentinels"] != 2:
                    return False
            return True

        try:
            eventually(settled, timeout, "the cluster to settle")
        except AssertionError:
            return False
        return True


@contextmanager
def cluster(root: Path, name: str, log: Log, min_replicas: int | None = None) -> Iterator[Cluster]:
    """A ``RedisHA`` with the workers of ``tests/test_failover.py``'s fixture on it;
    ``min_replicas``: ``BATON_MIN_REPLICAS`` (None: the default, 1)."""
    ledger = root / "ledger.jsonl"
    with RedisHA(root / "ha", down_after_ms=DOWN_AFTER_MS) as ha:
        prefix = f"{name}-{uuid.uuid4().hex[:6]}"
        env = {
            "BATON_REDIS_URL": ha.url,
            "BATON_KEY_PREFIX": prefix,
            "BATON_AGENT_MODULES": "tests.failover_agents",
            "BATON_HOME": str(root / "home"),
            "BATON_TEST_LEDGER": str(ledger),
            "BATON_STEP_LEASE_SECONDS": "3",
            "BATON_FAILOVER_TIMEOUT": "30",
            "BATON_STALL_SECONDS": "10",  # (a popped message the dead primary lost)
            "BATON_REAPER_INTERVAL": "2",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **({"BATON_MIN_REPLICAS": str(min_replicas)} if min_replicas is not None else {}),
        }
        settings = BatonSettings(redis_url=ha.url, key_prefix=prefix, home=root / "home",
                                 agent_modules=["tests.failover_agents"],
                                 min_replicas=min_replicas)  # fmt: skip
        assert settings.write_replicas == (min_replicas or 1)  # (1: the default on Sentinel)
        orch = WorkflowOrchestrator(ha.url, settings=settings, local_workers=False)
        workers = LocalWorkers(ha.url, [["ledger"], ["ledger"]], concurrency=2, env=env,
                               log_dir=root / "logs")  # fmt: skip
        try:
            workers.start(orch.app)
            log(f"  {name}: a Sentinel cluster and 2 workers up ({root})")
            logs = [
                BrokerLog(root / "logs" / f"worker-{n.split('@')[0]}.log") for n in workers.names
            ]
            yield Cluster(ha, orch, workers, Ledger(ledger), [p.pid for p in workers.processes],
                          logs)  # fmt: skip
        finally:
            workers.stop()
            orch.close()


class Load(threading.Thread):
    """A steady load: keeps ``inflight`` workflows running, starting one as another ends,
    until ``total`` were started (None: until ``finish``). The client is this thread's
    alone while it runs. A workflow not ended by ``give_up_at`` (monotonic) is stuck.
    Statuses are polled, all at once, rather than waited for one workflow at a time: a
    wait on one that a lost message holds up would hold up the refill of the others."""

    def __init__(self, orch: WorkflowOrchestrator, inflight: int, total: int | None) -> None:
        super().__init__(daemon=True)
        self.orch, self.inflight, self.total = orch, inflight, total
        self.ids: list[str] = []
        self.ended: dict[str, str] = {}  # id -> its final status
        self.client_errors: list[str] = []
        self.give_up_at = math.inf
        self._submitting = True

    @property
    def submitting(self) -> bool:
        return self._submitting and (self.total is None or len(self.ids) < self.total)

    @property
    def loaded(self) -> bool:
        """Whether at least ``inflight`` more workflows are still to start: a fault now
        meets a full load through its failover (not a run's last few workflows)."""
        left = math.inf if self.total is None else self.total - len(self.ids)
        return self._submitting and left >= self.inflight

    def finish(self, within: float) -> None:
        """Start no more; what has not ended ``within`` seconds from now is stuck."""
        self._submitting = False
        self.give_up_at = time.monotonic() + within

    def stuck(self) -> list[str]:
        return [wid for wid in self.ids if wid not in self.ended]

    def _start_one(self) -> str:
        """A workflow, started under an id of our own, so a start a failover interrupted is
        tried again as the same workflow (``run_workflow`` starts a created one once)."""
        wid = f"fo-{uuid.uuid4().hex}"
        for _ in range(5):
            try:
                return self.orch.run_workflow(flow(len(self.ids)), workflow_id=wid)
            except Exception as exc:  # (past BATON_FAILOVER_TIMEOUT: noted, tried again)
                self.client_errors.append(f"run_workflow: {exc!r}"[:200])
                time.sleep(0.5)
        raise RuntimeError(f"could not start a workflow: {self.client_errors[-1]}")

    def _statuses(self, ids: list[str]) -> list[str]:
        """The status of each workflow, in one round trip (a pipeline of ``HGET``\\ s)."""
        pipe = self.orch.redis.pipeline(transaction=False)
        for wid in ids:
            pipe.hget(self.orch.store.keys(wid).meta, MetaField.STATUS)
        return [raw.decode() if raw else "" for raw in pipe.execute()]

    def run(self) -> None:
        pending: list[str] = []
        while time.monotonic() < self.give_up_at:
            while self.submitting and len(pending) < self.inflight:
                try:
                    wid = self._start_one()
                except RuntimeError:
                    self._submitting = False  # (no more can start: what runs is waited for)
                    break
                self.ids.append(wid)
                pending.append(wid)
            if not pending:
                return  # (all started and ended)
            time.sleep(POLL_S)
            try:
                statuses = self._statuses(pending)
            except Exception as exc:  # (a read past the failover timeout: tried again)
                self.client_errors.append(f"status: {exc!r}"[:200])
                continue
            for wid, status in zip(list(pending), statuses, strict=True):
                if status in TERMINAL:
                    self.ended[wid] = status
                    pending.remove(wid)


def check(c: Cluster, ids: list[str]) -> dict[str, Any]:
    """``tests/test_failover.py``'s checker on ``ids``, counted instead of asserted: the
    final state of each workflow against the ledger (``tests/ledger_check.audit``).
    ``broken``: every promise that checker asserts and this run broke; apart, the ones
    that matter most: ``lost`` (an acknowledged run the final state does not hold) and
    ``twice`` (acknowledged twice, or run after its acknowledgement); and ``unacked``, a
    result the final state holds whose commit no worker was told of (nothing acknowledged
    is lost and nothing ran twice: counted, not a broken promise)."""
    contexts, missing = {}, []
    for wid in ids:
        try:
            contexts[wid] = c.orch.get_context(wid)
        except WorkflowNotFound:  # (its acknowledged create lost, and all it committed)
            missing.append(wid)
    end_of = eventually(lambda: ends_of_runs(read_ledger(c.ledger.path)), 30,
                        "every run's delivery to end")  # fmt: skip
    assert end_of is not None
    results = {
        wid: {s: (r.result or {}).get("token") for s, r in ctx.task_results.items()}
        for wid, ctx in contexts.items()
    } | {wid: {} for wid in missing}
    seen = audit(results, read_ledger(c.ledger.path), end_of)
    return {
        "workflows": len(ids),
        "missing": len(missing),
        "completed": sum(ctx.status.value == "completed" for ctx in contexts.values()),
        "acked": seen.acked,
        "lost": len(seen.lost),
        "twice": len(seen.twice) + len(seen.ran_after_ack),
        "unacked": len(seen.not_acked),
        "no_run": len(seen.no_run),
        "broken": len(seen.problems()) + len(missing),
        "reruns": seen.reruns,
        "rerun_times": [t for t in seen.rerun_times if t is not None],
        "problems": ([f"{wid}: acknowledged, then not found" for wid in missing] + seen.problems())[
            :10
        ],
    }


# --------------------------------------------------------------------------- (b), (c)


def _first_commit(c: Cluster, t: float) -> float:
    """When the first commit of a step begun after ``t`` was acknowledged (waited for)."""
    found = eventually(lambda: c.ledger.first_commit_begun_after(t), 60,
                       "a commit on the new primary")  # fmt: skip
    assert found is not None
    return found


def kill(c: Cluster) -> dict[str, Any]:
    """SIGKILL the primary; time the failover; restart the node as a replica, synced."""
    old, epoch = c.ha.primary(), c.epoch()
    node = c.ha.kill_primary()
    t_kill = time.time()  # (the process is dead: reaped)
    c.ha.wait_failover(old, timeout=30)
    named = time.time() - t_kill
    first = _first_commit(c, t_kill)
    c.ha.restart(node)
    settled = c.settle()
    return {"kind": "kill", "t": t_kill, "named_s": named, "first_commit_s": first - t_kill,
            "brokers_s": c.brokers_back(t_kill), "failovers": c.epoch() - epoch,
            "settled": settled}  # fmt: skip


def freeze(c: Cluster) -> dict[str, Any]:
    """SIGSTOP the primary for ``down-after`` + 2 s (past the failover, if it is slower),
    SIGCONT, and wait until the thawed node is a replica."""
    old, epoch = c.ha.primary(), c.epoch()
    node = c.ha.freeze_primary()
    t_freeze = time.time()
    try:
        c.ha.wait_failover(old, timeout=30)
        named = time.time() - t_freeze
        time.sleep(max(0.0, t_freeze + DOWN_AFTER_MS / 1000 + 2 - time.time()))
    finally:
        c.ha.thaw(node)
    first = _first_commit(c, t_freeze)
    try:
        eventually(lambda: node.replication().get("role") == "slave", 40, "the thawed node demoted")
        settled = c.settle()
    except AssertionError:
        settled = False
    return {"kind": "freeze", "t": t_freeze, "named_s": named, "first_commit_s": first - t_freeze,
            "brokers_s": c.brokers_back(t_freeze), "failovers": c.epoch() - epoch,
            "settled": settled}  # fmt: skip


def failover_time(
    root: Path, sz: FailoverSizes, log: Log, min_replicas: int | None = None
) -> dict[str, Any]:
    """(b): ``sz.kills`` kills under a steady load, the load's workflows checked after."""
    with cluster(root, "fotime", log, min_replicas) as c:
        load = Load(c.orch, sz.inflight, None)
        load.start()
        kills: list[dict[str, Any]] = []
        errors: list[str] = []
        try:
            for k in range(sz.kills):
                c.steady(sz.steady_commits, load)
                try:
                    kills.append(kill(c))
                except AssertionError as exc:  # (a failover that did not come: said so)
                    errors.append(str(exc)[:300])
                    log(f"  kill {k + 1}: {errors[-1]}")
                    continue
                log(f"  kill {k + 1}/{sz.kills}: first commit on the new primary after"
                    f" {kills[-1]['first_commit_s']:.2f} s (Sentinels agreed after"
                    f" {kills[-1]['named_s']:.2f} s)")  # fmt: skip
        finally:
            load.finish(STUCK_AFTER_S)
            load.join()
        verdict = check(c, load.ids)
        restarts = c.workers_restarted()
    verdict.pop("rerun_times")
    log(f"  the load: {verdict['completed']}/{verdict['workflows']} completed, {verdict['lost']}"
        f" lost, {verdict['twice']} twice, {verdict['reruns']} re-runs")  # fmt: skip
    return {"kills": kills, "errors": errors, "check": verdict, "stuck": len(load.stuck()),
            "worker_restarts": restarts, "client_errors": len(load.client_errors),
            "client_error_samples": load.client_errors[:3]}  # fmt: skip


def soak(root: Path, sz: FailoverSizes, log: Log) -> dict[str, Any]:
    """(c): runs of ``sz.soak_workflows`` workflows while faults are applied, one after
    another (a steady spell between), until ``sz.soak_faults`` were; each run checked."""
    faults: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    with cluster(root, "soak", log) as c:
        while len(faults) + len(errors) < sz.soak_faults or not runs:
            load = Load(c.orch, sz.inflight, sz.soak_workflows)
            load.start()
            try:
                while load.loaded and len(faults) + len(errors) < sz.soak_faults:
                    c.steady(sz.soak_steady, load)
                    if not load.loaded:
                        break  # (the run's last workflows: faults go to the next run)
                    kind = fault_kind(len(faults) + len(errors))
                    try:
                        faults.append((kill if kind == "kill" else freeze)(c))
                    except AssertionError as exc:
                        errors.append(f"{kind}: {exc}"[:300])
                        log(f"  soak {kind}: {errors[-1]}")
                        continue
                    log(f"  soak fault {len(faults)}/{sz.soak_faults}: {kind}, first commit"
                        f" after {faults[-1]['first_commit_s']:.2f} s")  # fmt: skip
            finally:
                while load.submitting and load.is_alive():
                    time.sleep(0.2)  # (the run's remaining workflows start, unfaulted)
                load.finish(STUCK_AFTER_S)
                load.join()
            verdict = check(c, load.ids)
            verdict["stuck"] = len(load.stuck())
            verdict["client_errors"] = len(load.client_errors)
            verdict["client_error_samples"] = load.client_errors[:3]
            runs.append(verdict)
            log(f"  soak run {len(runs)}: {verdict['completed']}/{verdict['workflows']}"
                f" completed, {verdict['lost']} lost, {verdict['twice']} twice,"
                f" {verdict['unacked']} never acknowledged, {verdict['broken']} broken"
                f" promise(s), {verdict['stuck']} stuck, {verdict['reruns']} re-runs")  # fmt: skip
        restarts = c.workers_restarted()
    return _soak_figures(sz, faults, runs, errors, restarts, time.perf_counter() - t0)


def _soak_figures(
    sz: FailoverSizes,
    faults: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    errors: list[str],
    restarts: int,
    seconds: float,
) -> dict[str, Any]:
    """Totals over runs, and each re-run charged to the fault just before it began."""
    times = sorted((f["t"], f["kind"]) for f in faults)
    charged = {"kill": 0, "freeze": 0, "none": 0}
    for run in runs:
        for t in run.pop("rerun_times"):
            before = [kind for ft, kind in times if ft <= t]
            charged[before[-1] if before else "none"] += 1
    kinds = {k: [f for f in faults if f["kind"] == k] for k in ("kill", "freeze")}

    def total(key: str) -> int:
        return sum(int(r[key]) for r in runs)

    return {
        "sizes": {
            "faults": sz.soak_faults,
            "workflows_per_run": sz.soak_workflows,
            "steady": sz.soak_steady,
        },  # fmt: skip
        "seconds": seconds,
        "runs": runs,
        "kills": len(kinds["kill"]),
        "freezes": len(kinds["freeze"]),
        "fault_errors": errors,
        "workflows": total("workflows"),
        "completed": total("completed"),
        "acked": total("acked"),
        "lost": total("lost"),
        "missing": total("missing"),
        "twice": total("twice"),
        "unacked": total("unacked"),
        "no_run": total("no_run"),
        "broken": total("broken"),
        "stuck": total("stuck"),
        "client_errors": total("client_errors"),
        "client_error_samples": [e for r in runs for e in r["client_error_samples"]][:3],
        "worker_restarts": restarts,
        "reruns": {k: charged[k] for k in charged},
        "first_commit_s": {k: _spread([f["first_commit_s"] for f in v]) for k, v in kinds.items()},
        "brokers_s": {
            k: _spread([f["brokers_s"] for f in v if f["brokers_s"] is not None])
            for k, v in kinds.items()
        },
        "double_failovers": sum(f["failovers"] > 1 for f in faults),
        "unsettled": sum(not f["settled"] for f in faults),
        "faults": faults,
        "problems": [p for r in runs for p in r["problems"]][:10],
    }


def run(root: Path, sz: FailoverSizes, log: Log) -> dict[str, Any]:
    """The three scenarios (each on servers and workers of its own, one after another)."""
    out: dict[str, Any] = {"sizes": asdict(sz)}
    log("12a. WAIT's overhead per step: a primary and one replica")
    out["overhead"] = overhead(root / "overhead", sz, log)
    log("12b. failover time: kills under a steady load")
    out["failover"] = failover_time(root / "failover", sz, log)
    log(f"12c. soak: {sz.soak_faults} faults, runs of {sz.soak_workflows} workflows")
    out["soak"] = soak(root / "soak", sz, log)
    return out


# --------------------------------------------------------------------------- the report


def _fmt(s: dict[str, float], digits: int = 2, unit: str = "") -> str:
    """``median (min–max)``, as the other sections write it."""
    if s["median"] != s["median"]:
        return "–"
    f = f"{{:,.{digits}f}}"
    if round(s["min"], digits) == round(s["max"], digits):
        return f.format(s["median"]) + unit
    return f"{f.format(s['median'])}{unit} ({f.format(s['min'])}–{f.format(s['max'])})"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _per_repeat(res: dict[str, Any], key: str) -> dict[str, dict[str, float]]:
    """Each setting's figure over repeats, and per repeat: min1 - min0, min1 ÷ celery."""
    ov = res["overhead"]
    vals = {k: [float(r[key]) for r in ov[k]] for k in ("min1", "min0", "celery")}
    out = {k: _spread(v) for k, v in vals.items()}
    out["diff"] = _spread([a - b for a, b in zip(vals["min1"], vals["min0"], strict=True)])
    out["ratio"] = _spread([a / b for a, b in zip(vals["min1"], vals["celery"], strict=True)
                            if b > 0])  # fmt: skip
    return out


def targets(res: dict[str, Any]) -> str:
    """The section's targets, each judged (the soak's fault counts: the full soak's)."""
    rows: list[list[str]] = []
    if "overhead" in res:
        d = _per_repeat(res, "per_step_ms")["diff"]
        ok = d["median"] <= TARGET_OVERHEAD_MS
        rows.append(["WAIT for 1 replica: extra per step, median (ms)", _fmt(d, 2),
                     f"≤ +{TARGET_OVERHEAD_MS:g}", _met(ok)])  # fmt: skip
    if "failover" in res:
        f = _spread([k["first_commit_s"] for k in res["failover"]["kills"]])
        ok = f["median"] <= TARGET_FAILOVER_S and not res["failover"]["errors"]
        rows.append(["Primary killed: to the first commit on the new primary (s)", _fmt(f, 2),
                     f"≤ {TARGET_FAILOVER_S:g}", _met(ok)])  # fmt: skip
    s = res["soak"]
    zero = {"acknowledged commits lost": s["lost"],
            "acknowledged workflows lost whole": s.get("missing", 0),
            "steps committed twice": s["twice"],
            "stuck workflows": s["stuck"], "worker restarts": s["worker_restarts"],
            "`tests/test_failover.py`'s checker, promises broken": s["broken"]}  # fmt: skip
    for label, n in zero.items():
        rows.append([f"Soak: {label}", f"{n:,}", "0", _met(n == 0)])
    full = s["sizes"]["workflows_per_run"] >= FULL_SOAK["workflows"]
    size = "" if full else f" (a short soak: runs of {s['sizes']['workflows_per_run']:,})"
    rows.append([f"Soak: kills / freezes{size}", f"{s['kills']} / {s['freezes']}",
                 f"≥ {FULL_SOAK['kills']} / ≥ {FULL_SOAK['freezes']} in runs of"
                 f" {FULL_SOAK['workflows']:,}",
                 _met(full and s["kills"] >= FULL_SOAK["kills"]
                      and s["freezes"] >= FULL_SOAK["freezes"])])  # fmt: skip
    return _table(["target", "measured", "target", "met?"], rows)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def section(res: dict[str, Any]) -> str:
    """Section 12 of docs/benchmarks.md."""
    sz = res["sizes"]
    out = ["## 12. Redis failover\n",
           "Measured by `bench/failover.py`: what issue 23's replica-acknowledged writes cost"
           " when nothing fails, how long a dead primary stops the work, and whether any"
           " acknowledged commit is lost, on real processes on loopback (`redis-server`,"
           " `redis-server --sentinel`, `baton worker`). Figures are medians with min–max.\n",
           targets(res), ""]  # fmt: skip
    if "overhead" in res:
        out += _overhead_part(res, sz)
    if "failover" in res:
        out += _failover_part(res, sz)
    out += _soak_part(res["soak"])
    return "\n".join(out) + "\n"


def _overhead_part(res: dict[str, Any], sz: dict[str, Any]) -> list[str]:
    ov = res["overhead"]
    wall, between = _per_repeat(res, "per_step_ms"), _per_repeat(res, "step_to_step_ms")
    waits = {k: _spread([float(r["waits_per_workflow"]) for r in ov[k]]) for k in ov
             if k in ("min1", "min0", "celery")}  # fmt: skip
    lost = sum(int(r["lost"]) for k in ("min1", "min0", "celery") for r in ov[k])
    rows = [
        ["Baton, `BATON_MIN_REPLICAS=1`", _fmt(wall["min1"]), _fmt(between["min1"]),
         _fmt(waits["min1"], 1)],
        ["Baton, `BATON_MIN_REPLICAS=0`", _fmt(wall["min0"]), _fmt(between["min0"]),
         _fmt(waits["min0"], 1)],
        ["bare Celery chain", _fmt(wall["celery"]), _fmt(between["celery"]), "–"],
        ["**=1 − =0** (per repeat)", _fmt(wall["diff"]), _fmt(between["diff"]), "–"],
        ["=1 ÷ Celery (per repeat)", _fmt(wall["ratio"], 2, "×"), _fmt(between["ratio"], 2, "×"),
         "–"],
    ]  # fmt: skip
    return [
        "### 12a. Replica-acknowledged commit overhead\n",
        "A primary and one replica (`redis-server --replicaof`, no Sentinels), the 5-step"
        " no-op chain of section 1, one workflow at a time. Each setting has its worker"
        " session (one process, concurrency 2) and its own database on that primary, all"
        f" three running at once; per repeat (new sessions each), {sz['chains']} chains of"
        " each, interleaved one by one, the order alternating, so the settings meet the"
        " same load of the machine (sessions run one after another differed by ±2 ms per"
        f" step here, more than the difference looked for); {sz['repeats']} repeats. With"
        " `=1` every script's write (client and workers) is followed by `WAIT 1` in the same"
        " round trip; `WAIT`s counted by the server (`INFO commandstats`). Per step: the"
        " chain's wall time ÷ 5 (from `run_workflow()` to `wait()` returning), and from the"
        " first step's commit to the last's ÷ 4; each a repeat's median, then median"
        " (min–max) over repeats; differences and ratios are per repeat."
        + (f" {lost} workflow(s) lost (not finished within the bound), left out." if lost
           else "") + "\n",
        _table(["", "per step, wall ÷ 5 (ms)", "step to step (ms)", "`WAIT`s per workflow"],
               rows),
        f"\nThe replica stayed online throughout: {_met(bool(ov.get('replica_online_after')))}."
        "\n",
    ]  # fmt: skip


def _failover_part(res: dict[str, Any], sz: dict[str, Any]) -> list[str]:
    fo = res["failover"]
    kills = fo["kills"]
    first = _spread([k["first_commit_s"] for k in kills])
    named = _spread([k["named_s"] for k in kills])
    chk = fo["check"]
    brokers = _spread([k["brokers_s"] for k in kills if k["brokers_s"] is not None])
    rows = [
        ["kills (failovers that did not come within 30 s)", f"{len(kills)} ({len(fo['errors'])})"],
        ["kill → first acknowledged commit on the new primary (s)", _fmt(first)],
        ["kill → every Sentinel names the new primary, which has a replica (s)", _fmt(named)],
        ["kill → both workers' broker connections back (s)", _fmt(brokers)],
        ["kills that took a second failover", f"{sum(k['failovers'] > 1 for k in kills)}"],
        ["kills after which the cluster did not settle within 60 s",
         f"{sum(not k.get('settled', True) for k in kills)}"],
        ["workflows of the load, completed", f"{chk['completed']:,} / {chk['workflows']:,}"],
        ["acknowledged commits lost / steps committed twice", f"{chk['lost']} / {chk['twice']}"],
        ["workflows whose acknowledged create was lost", f"{chk.get('missing', 0)}"],
        ["`tests/test_failover.py`'s checker: promises broken", f"{chk['broken']}"],
        ["agent re-runs (unacknowledged commits)", f"{chk['reruns']}"],
        ["stuck workflows / worker restarts", f"{fo['stuck']} / {fo['worker_restarts']}"],
    ]  # fmt: skip
    return [
        "### 12b. Failover time\n",
        "`tests/ha.py`'s `RedisHA`: three data nodes (each fenced: `min-replicas-to-write"
        " 1`), three Sentinels, quorum 2, `down-after-milliseconds` "
        f"{DOWN_AFTER_MS}; Baton on `redis+sentinel://` (`BATON_MIN_REPLICAS` 1, its"
        " default there). Two `baton worker` processes (concurrency 2) run"
        " `tests/failover_agents.py`'s `ledger.digest` (a few ms of key derivation per"
        f" step) under a steady load of 5-step workflows ({sz['inflight']} kept in flight)."
        f" {sz['kills']} times: {sz['steady_commits']} acknowledged commits, then SIGKILL of"
        " the primary; the time runs from its death to the first acknowledged commit of a"
        " step begun after it (the workers' ledger, outside Redis: a step begun after the"
        " kill can only commit on the new primary); then the killed node is restarted as a"
        " replica, and the next kill waits until every node replicates the primary and"
        " every Sentinel knows a replica to promote (the cluster *settled*; up to 60 s). The"
        " load's workflows are checked after, as in 12c. Also per kill: when"
        " every Sentinel named the new primary, when both workers' Celery consumers had"
        " reconnected to the broker (their logs), and how many failovers it took (steps of"
        " the Sentinels' config-epoch).\n",
        _table(["", ""], rows),
        "",
        _table(
            ["kill", "first commit (s)", "Sentinels agree (s)", "brokers back (s)", "failovers"],
            [
                [
                    str(i + 1),
                    f"{k['first_commit_s']:.2f}",
                    f"{k['named_s']:.2f}",
                    "–" if k["brokers_s"] is None else f"{k['brokers_s']:.2f}",
                    str(k["failovers"]),
                ]
                for i, k in enumerate(kills)
            ],
        ),
        "",
        WHY_FAILOVER_TAKES,
        "",
    ]


def _soak_part(s: dict[str, Any]) -> list[str]:
    per = {k: (s["reruns"][k] / n if n else math.nan)
           for k, n in (("kill", s["kills"]), ("freeze", s["freezes"]))}  # fmt: skip
    first = s["first_commit_s"]
    rows = [
        ["runs × workflows (5 steps each)",
         f"{len(s['runs'])} × {s['sizes']['workflows_per_run']:,} ({s['seconds'] / 60:.1f} min)"],
        ["faults: kills / freezes (failovers that did not come)",
         f"{s['kills']} / {s['freezes']} ({len(s['fault_errors'])})"],
        ["workflows completed", f"{s['completed']:,} / {s['workflows']:,}"],
        ["acknowledged commits (steps)", f"{s['acked']:,}"],
        ["acknowledged commits lost", f"{s['lost']}"],
        ["workflows whose acknowledged create was lost", f"{s.get('missing', 0)}"],
        ["steps committed twice", f"{s['twice']}"],
        ["steps committed but never acknowledged (not run again)", f"{s['unacked']}"],
        ["`tests/test_failover.py`'s checker: promises broken", f"{s['broken']}"],
        ["stuck workflows", f"{s['stuck']}"],
        ["worker restarts", f"{s['worker_restarts']}"],
        ["agent re-runs per kill / per freeze",
         f"{per['kill']:.2f} / {per['freeze']:.2f} ({s['reruns']['kill']} / "
         f"{s['reruns']['freeze']}; before any fault: {s['reruns']['none']})"],
        ["kill → first commit on the new primary (s)", _fmt(first["kill"])],
        ["freeze → first commit on the new primary (s)", _fmt(first["freeze"])],
        ["kill / freeze → both workers' broker connections back (s)",
         f"{_fmt(s['brokers_s']['kill'])} / {_fmt(s['brokers_s']['freeze'])}"],
        ["faults that took a second failover", f"{s['double_failovers']}"],
        ["faults after which the cluster did not settle within 60 s", f"{s['unsettled']}"],
        ["client calls a failover cut, tried again", f"{s['client_errors']}"],
    ]  # fmt: skip
    problems = (["", "Broken promises (the first ten):", "",
                 *(f"- {p}" for p in s["problems"])] if s["problems"] else [])  # fmt: skip
    return [
        "### 12c. Soak\n",
        f"The cluster of 12b; runs of {s['sizes']['workflows_per_run']:,} five-step"
        " workflows (a steady load, as in 12b) while the harness applies faults one after"
        f" another, {s['sizes'].get('steady', 40)} acknowledged commits between: kill, kill,"
        " freeze, kill, repeating (no fault once fewer than a full load of a run's workflows"
        " are left to start: it goes to the next run). A kill as in 12b; a freeze is SIGSTOP"
        " of the primary for"
        f" `down-after` + 2 s ({DOWN_AFTER_MS / 1000 + 2:g} s, longer if the failover has"
        " not come by then), then SIGCONT, and a wait until the thawed node has become a"
        " replica. Each run is checked as `tests/test_failover.py` checks (`tests/"
        "ledger_check.py`): the final state of every workflow against the ledger the"
        " workers wrote outside Redis. *Lost*: an acknowledged commit the final state does"
        " not hold; *twice*: a step acknowledged twice, or run again after its"
        " acknowledgement; *committed but never acknowledged*: a result the final state"
        " holds though its run's delivery never ended acknowledged (its commit reached the"
        " primary and a replica, but the answer of its `WAIT` did not come in time, so the"
        " worker gave the message back, and the next delivery found the step done): nothing"
        " acknowledged is lost and nothing ran twice, so it is counted, not a broken"
        " promise; *stuck*: not ended"
        f" {STUCK_AFTER_S:g} s after its run's last start. A re-run is charged to the fault"
        " just before it began; worker restarts: `baton worker` processes that exited or"
        " were replaced.\n",
        _table(["", ""], rows),
        *problems,
    ]


WHY_FAILOVER_TAKES = (
    "What the time is made of, as the Sentinels' and workers' logs of these runs show: the"
    " Sentinels take about 1 s (`down-after`) to judge the primary down and about 1 s more"
    " to promote a replica. The first commits come from messages the workers held: their"
    " state client (`FailoverRetry`: pauses of 0.1 s doubling up to 1 s) tries again 0.1,"
    " 0.3, 0.7, 1.5, 2.5, 3.5 s ... after the kill, and the first try after the promotion"
    " goes through (hence 1.5 or 2.5 s). New messages wait for the workers' Celery"
    " consumers: each lost its broker connection at the kill and reconnects on kombu's"
    " schedule (at once, 2 s later, 4 s after that: back at about 5 s; a faster schedule,"
    " tried, brought them back at 3 s, inside the window below)."
    " Some faults take a second failover: a"
    " Sentinel judged the just-promoted primary down (with `down-after` 1 s, its first PING"
    " reply has 1 s to come) and promoted another node while the first stayed up. **That is"
    " where `BATON_MIN_REPLICAS=1` can lose acknowledged work:** between the second"
    " promotion and the Sentinels' demotion of the deposed primary (1 to 2 s), the deposed"
    " one still takes writes, and a replica still attached to it (here the node restarted"
    " after the kill) acknowledges them; then both are turned into replicas of the newest"
    " primary and what they held is dropped. Waiting for every replica"
    " (`BATON_MIN_REPLICAS` = the number of replicas, 2 here) closes it: the promoted node"
    " stops replicating the deposed one, so no write there is acknowledged; the price is"
    " that writes wait while any replica is down. If a second failover leaves the newest"
    " primary with no replica (the killed node not restarted yet, the deposed one not yet"
    " its replica), its fence (`min-replicas-to-write 1`) refuses every write meanwhile."
)


def only_markdown(data: dict[str, Any]) -> str:
    """The report of ``python -m bench --only failover``."""
    machine = _table(["", ""], [[k, str(v)] for k, v in data["machine"].items()])
    soak = data["failover"]["soak"]["sizes"]
    full = soak["workflows_per_run"] >= FULL_SOAK["workflows"]
    command = "--only failover" + (f" --soak {soak['faults']}" if full else "")
    return "\n".join([
        "# Benchmarks: Redis failover (Baton)\n",
        f"Written by `python -m bench {command}` from a real run"
        f" ({data['elapsed_s'] / 60:.1f} min, {data['finished']}); the full report is"
        " `docs/benchmarks.md`. **Caveat:** a shared 2-core machine; the load averages"
        " under *Machine* say how busy it was.\n",
        "## Machine\n",
        machine,
        "",
        section(data["failover"]),
    ])  # fmt: skip
