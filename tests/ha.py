"""Redis Sentinel on loopback: three data nodes and three Sentinels, as real processes.

For the failover tests and the benchmark: the same ``redis-server`` binary as Baton's
embedded Redis, started the same way (``RedisServer``: configuration on stdin, readiness
from the log), plus what high availability needs. Every data node carries the primary's
fence (``min-replicas-to-write 1``, ``min-replicas-max-lag 10``: any node may become the
primary, and a primary cut off from its replicas must refuse writes). The Sentinels are
seeded with each other and with the replicas (as Sentinel itself records them), so the
cluster is ready without waiting for discovery, and readiness is polled, never slept for.
``stop`` kills everything; a small reaper process does it if the owner dies without it.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestration.client.embedded import RedisServer, free_port, redis_server_binary
from tests.helpers import eventually

HOST = "127.0.0.1"
Addr = tuple[str, int]
T = TypeVar("T")


def _quoted(value: str) -> str:
    """``value`` double-quoted for a redis.conf line: any character is taken as written."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _client(port: int, password: str | None, timeout: float) -> redis.Redis[str]:
    return redis.Redis(
        host=HOST,
        port=port,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


@dataclass
class DataNode(RedisServer):
    """A data node: ``RedisServer`` with its replication settings in ``node.conf``.

    They go in by ``--include`` (a file, mode 0600) rather than as arguments, so the
    primary's password (``masterauth``) is on no command line, and ``restart`` can point
    the node at whichever node is the primary by then.
    """

    name: str = ""
    frozen: bool = False

    @property
    def addr(self) -> Addr:
        return (HOST, self.port)

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def configure(self, replica_of: Addr | None) -> None:
        """Write ``node.conf``: the fence, fast diskless sync, and whom to replicate."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [
            "min-replicas-to-write 1",
            "min-replicas-max-lag 10",
            "repl-diskless-sync yes",
            "repl-diskless-sync-delay 0",
        ]
        if self.password:
            lines.append(f"masterauth {_quoted(self.password)}")
        if replica_of:
            lines.append(f"replicaof {replica_of[0]} {replica_of[1]}")
        conf = self.directory / "node.conf"
        conf.touch(mode=0o600)
        conf.write_text("\n".join(lines) + "\n")
        self.extra_args = ("--include", str(conf.resolve()))

    def client(self, timeout: float = 0.5) -> redis.Redis[str]:
        """A client of this node alone, for looking at it: one try, short timeouts (a
        frozen node never answers; a poll must not wait out redis-py's retries)."""
        return _client(self.port, self.password, timeout)

    def replication(self) -> dict[str, Any]:
        """``INFO replication``, parsed."""
        with self.client() as c:
            return dict(c.info("replication"))

    def signal(self, sig: signal.Signals) -> None:
        """Signal the node's process group: it and any child it forked (a sync, an AOF
        rewrite) stop, continue or die together, as on a machine that stops."""
        assert self.process is not None, f"{self.name} was never started"
        os.killpg(self.process.pid, sig)


@dataclass
class SentinelNode:
    """One ``redis-server --sentinel``: it needs a config file it can rewrite, so no stdin."""

    directory: Path
    port: int
    lines: list[str]
    password: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> Addr:
        return (HOST, self.port)

    @property
    def log_path(self) -> Path:
        return self.directory / "sentinel.log"

    def start(self) -> None:
        """Start the process (readiness is the cluster's, see ``RedisHA.start``)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "sentinel.conf"
        conf.touch(mode=0o600)
        conf.write_text("\n".join(self.lines) + "\n")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [redis_server_binary(), str(conf.resolve()), "--sentinel"],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def client(self, timeout: float = 0.5) -> redis.Redis[str]:
        return _client(self.port, self.password, timeout)

    def ask(self, command: str, *args: str) -> Any:
        """``SENTINEL <command> ...``, its reply parsed by redis-py."""
        with self.client() as c:
            return c.execute_command(f"SENTINEL {command}", *args)

    def primary(self, service: str) -> Addr | None:
        """The primary this Sentinel names for ``service`` (None: it knows no such one)."""
        found = self.ask("GET-MASTER-ADDR-BY-NAME", service)
        return (str(found[0]), int(found[1])) if found else None


@dataclass
class RedisHA:
    """A primary, two replicas and three Sentinels (quorum 2) on free loopback ports.

    ``down_after_ms`` is how long a silent primary takes to be judged down (a failover
    then takes about 2 s more). A thawed old primary is demoted about 10 s after it thaws:
    Sentinel reads a replica's INFO every 10 s (fixed), and waits ``failover_timeout_ms``
    after one claims to be a primary; a failed failover is retried after twice that.
    """

    directory: Path
    password: str | None = None
    sentinel_password: str | None = None
    service: str = "baton"
    down_after_ms: int = 1000
    failover_timeout_ms: int = 5000
    nodes: list[DataNode] = field(default_factory=list)
    sentinels: list[SentinelNode] = field(default_factory=list)
    reaper: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> RedisHA:
        """Start everything; return once the Sentinels agree on the primary, know both
        replicas and each other, and both replicas are online at the primary."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._start_reaper()
        self.nodes = [
            DataNode(self.directory / f"node-{i}", port=free_port(), password=self.password,
                     name=f"node-{i}")
            for i in range(3)
        ]  # fmt: skip
        primary, *replicas = self.nodes
        primary.configure(None)
        primary.start(timeout)
        for node in replicas:
            node.configure(primary.addr)
            node.start(timeout)
        self._record_pids()
        ports = [free_port() for _ in range(3)]
        ids = [secrets.token_hex(20) for _ in ports]
        for i, (port, myid) in enumerate(zip(ports, ids, strict=True)):
            lines = [
                f"port {port}",
                f"bind {HOST}",
                f'dir "{(self.directory / f"sentinel-{i}").resolve()}"',
                'logfile ""',
                f"sentinel myid {myid}",
                f"sentinel monitor {self.service} {HOST} {primary.port} 2",
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {self.service} 2",
            ]
            if self.password:
                lines.append(f"sentinel auth-pass {self.service} {_quoted(self.password)}")
            if self.sentinel_password:  # (also what Sentinels use with each other)
                lines.append(f"requirepass {_quoted(self.sentinel_password)}")
            # What Sentinel would discover in seconds (hello messages every 2 s, INFO
            # every 10 s), seeded as it records it in its own config.
            lines += [f"sentinel known-replica {self.service} {HOST} {n.port}" for n in replicas]
            lines += [
                f"sentinel known-sentinel {self.service} {HOST} {p} {other}"
                for p, other in zip(ports, ids, strict=True)
                if p != port
            ]
            self.sentinels.append(
                SentinelNode(self.directory / f"sentinel-{i}", port, lines, self.sentinel_password)
            )
        for sentinel in self.sentinels:
            sentinel.start()
        self._record_pids()
        self._wait(self._ready, timeout, "the primary's replicas and the Sentinels")

    def _ready(self) -> bool:
        primary = self.nodes[0]
        info = primary.replication()
        if info.get("min_slaves_good_slaves") != 2:
            return False
        for sentinel in self.sentinels:
            master = sentinel.ask("MASTER", self.service)
            known = sentinel.ask("SLAVES", self.service) + sentinel.ask("SENTINELS", self.service)
            if (master["ip"], master["port"]) != primary.addr or master["flags"] != "master":
                return False
            if master["num-slaves"] != 2 or master["num-other-sentinels"] != 2:
                return False
            if any(k["flags"] not in ("slave", "sentinel") for k in known):
                return False  # (a link still down)
            if any(k.get("master-link-status", "ok") != "ok" for k in known):
                return False  # (a replica's INFO not read yet: it could not be promoted)
        return True

    def _start_reaper(self) -> None:
        """A watchdog that kills the cluster if this process dies without ``stop`` (a
        SIGKILL, a timeout's exit): no redis-server outlives its test run."""
        # Its parent changes the moment this process exits, reaped or not (kill -0 would
        # still find an unreaped one). (dash's kill takes no "--": "-$g" is the group.)
        script = (
            'o=$PPID; while [ "$(cut -d" " -f4 /proc/$$/stat)" = "$o" ]; do sleep 1; done; '
            'for g in $(cat "$0"); do kill -CONT "-$g"; kill -KILL "-$g"; done'
        )
        self._pids_file.write_text("")
        self.reaper = subprocess.Popen(
            ["sh", "-c", script, str(self._pids_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # (holding no pipe of this process's owner open)
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # (not in this process's group: it outlives it)
        )

    @property
    def _pids_file(self) -> Path:
        return self.directory / "pids"

    def _record_pids(self) -> None:
        """Tell the reaper which process groups to kill (each process leads its own)."""
        running = [p.pid for p in self._processes() if p.poll() is None]
        self._pids_file.write_text(" ".join(map(str, running)) + "\n")

    def stop(self) -> None:
        """Kill every process (a frozen one is continued first) and wait for it to exit."""
        if self.reaper:
            self.reaper.kill()
            self.reaper.wait()
            self.reaper = None
        for proc in self._processes():
            if proc.poll() is None:  # (its own session: the group is it and its children)
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for node in self.nodes:
            node.frozen = False

    def _processes(self) -> list[subprocess.Popen[bytes]]:
        owners: list[DataNode | SentinelNode] = [*self.sentinels, *self.nodes]
        return [o.process for o in owners if o.process is not None]

    @property
    def pids(self) -> list[int]:
        """Pids of every process this cluster started (the last run of each node)."""
        return [p.pid for p in self._processes()]

    def __enter__(self) -> RedisHA:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what clients see -------------------------------------------------------------

    @property
    def sentinel_addrs(self) -> list[Addr]:
        return [s.addr for s in self.sentinels]

    @property
    def url(self) -> str:
        """``redis+sentinel://[:password@]host:port,.../<service>/0`` for Baton."""
        auth = f":{urllib.parse.quote(self.password, safe='')}@" if self.password else ""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addrs)
        return f"redis+sentinel://{auth}{hosts}/{self.service}/0"

    def primary(self) -> Addr:
        """The primary as the Sentinels report it (the first that answers)."""
        for addr in self._named():
            if addr:
                return addr
        raise redis.ConnectionError(f"no Sentinel names a primary; see {self._logs()}")

    def _named(self) -> list[Addr | None]:
        """The primary each Sentinel that answers names, in order."""
        named = []
        for sentinel in self.sentinels:
            try:
                named.append(sentinel.primary(self.service))
            except redis.RedisError:
                continue  # (killed, or frozen: it times out)
        return named

    def node(self, addr: Addr) -> DataNode:
        """The data node at ``addr``."""
        return next(n for n in self.nodes if n.addr == addr)

    def primary_node(self) -> DataNode:
        return self.node(self.primary())

    # -- faults ------------------------------------------------------------------------

    def kill_primary(self) -> DataNode:
        """SIGKILL the primary (no shutdown, no last fsync) and return its node."""
        node = self.primary_node()
        node.signal(signal.SIGKILL)
        assert node.process is not None
        node.process.wait()
        self._record_pids()
        return node

    def freeze_primary(self) -> DataNode:
        """SIGSTOP the primary: alive, connected, silent (a long pause, a partition)."""
        node = self.primary_node()
        node.signal(signal.SIGSTOP)
        node.frozen = True
        return node

    def thaw(self, node: DataNode) -> None:
        node.signal(signal.SIGCONT)
        node.frozen = False

    def restart(self, node: DataNode, timeout: float = 10.0) -> None:
        """Start a killed node again, same port and directory (its AOF), as a replica of
        the Sentinels' primary from its first moment: never a second primary. (If the
        Sentinels still name the node itself, no failover happened: it is the primary.)"""
        assert not node.running, f"{node.name} is still running"
        current = self.primary()
        node.configure(None if current == node.addr else current)
        node.start(timeout)
        self._record_pids()

    # -- waits -------------------------------------------------------------------------

    def wait_failover(self, old: Addr, timeout: float = 15.0) -> Addr:
        """The new primary, once every Sentinel that answers (two at least) names the same
        node other than ``old``, it says it is a primary, and a replica is online at it
        (so writes pass its ``min-replicas-to-write 1``)."""

        def new_primary() -> Addr | None:
            named = self._named()
            addr = named[0] if len(named) >= 2 and len(set(named)) == 1 else None
            if addr is None or addr == old:
                return None
            info = self.node(addr).replication()
            if info["role"] != "master" or info.get("min_slaves_good_slaves", 0) < 1:
                return None
            return addr

        return self._wait(new_primary, timeout, f"a failover away from {old[0]}:{old[1]}")

    def wait_replicas_synced(self, timeout: float = 10.0) -> Addr:
        """Wait until every running, unfrozen node other than the primary replicates it
        with its link up and no sync in progress, and the primary lists it online;
        return the primary."""

        def synced() -> Addr | None:
            addr = self.primary()
            primary = self.node(addr)
            online = {
                (str(s["ip"]), int(s["port"]))
                for k, s in primary.replication().items()
                if k.startswith("slave") and isinstance(s, dict) and s.get("state") == "online"
            }
            for node in self.nodes:
                if node is primary or not node.running or node.frozen:
                    continue
                info = node.replication()
                following = (info.get("master_host"), info.get("master_port")) == addr
                if not (info["role"] == "slave" and following and node.addr in online):
                    return None
                if info["master_link_status"] != "up" or info["master_sync_in_progress"]:
                    return None
            return addr

        return self._wait(synced, timeout, "the replicas to sync with the primary")

    def _wait(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        """``check()`` until truthy; on timeout, the error names every log to read."""
        value = eventually(check, timeout, f"{what} (logs: {self._logs()})")
        assert value is not None
        return value

    def _logs(self) -> str:
        logs = [n.log_path for n in self.nodes] + [s.log_path for s in self.sentinels]
        return " ".join(map(str, logs))


__all__ = ["Addr", "DataNode", "RedisHA", "SentinelNode"]
