"""One run of one scenario of ``bench/compare.py``, in whichever tree is on ``PYTHONPATH``.

``python -P <this file> io|map100k|map10k``, with ``PYTHONPATH`` and the working
directory both the root of the tree under test (``bench.compare`` starts it so, once per
tree per repeat). This file is passed by path because the earlier tree has no
``bench.compare``: it imports only what both trees have (``bench.io``, ``bench.maps``,
``bench.sides``, ``bench.scenarios``, ``tests.llm_server``, ``orchestration.settings``,
``orchestration.client``), and only inside the scenario's function; ``-P`` (or, without
it, the first lines of :func:`main`) keeps this file's own directory off ``sys.path``, so
that ``bench/agents.py`` cannot stand in for the ``agents`` package.

The run owns a private redis-server and its workers, and stops them at its end. Every
process it starts inherits ``BENCH_COMPARE_TOKEN`` from its environment, and the run's
directory, where redis-server works, is named with it; what still carries that token, in
its environment or its working directory, once everything is stopped is a stray
(:func:`strays`), killed by its pid and named in the figures.

It prints one JSON line on stdout: the scenario, the tree, the file each of
``orchestration``, ``bench`` and ``tests`` was imported from (all three checked to be
under the tree), the figures of the one timed run, and the strays; its progress goes to
stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

TOKEN_VAR = "BENCH_COMPARE_TOKEN"
SCENARIOS = ("io", "map100k", "map10k")
MAP_ITEMS = {"map100k": 100_000, "map10k": 10_000}


def log(msg: str) -> None:
    print(f"[bench.compare_one {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _environ(pid: int) -> dict[str, str]:
    """A process's environment (``/proc/<pid>/environ``); empty if it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def strays(token: str) -> list[dict[str, Any]]:
    """Processes other than this one whose environment carries ``token``, or whose working
    directory is in the run's directory (named with it: redis-server writes its title over
    its environment), each killed (SIGKILL, by its pid): ``[{pid, cmd}]``."""
    if len(token) < 8:
        raise ValueError(f"{TOKEN_VAR} {token!r} is too short to tell a run's processes")
    found: list[dict[str, Any]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        if _environ(pid).get(TOKEN_VAR) == token or token in _cwd(pid):
            found.append({"pid": pid, "cmd": _cmdline(pid)})
            with contextlib.suppress(OSError):  # (gone in the meantime)
                os.kill(pid, signal.SIGKILL)
    return found


def _check_under(tree: Path, what: str, path: str | None) -> str:
    """``path`` (a module's file, a worker's ``PYTHONPATH`` entry) must lie in ``tree``."""
    if not path or not Path(path).resolve().is_relative_to(tree):
        raise RuntimeError(f"{what} is {path!r}, not under the tree under test {tree}")
    return path


def _check_workers(tree: Path, pids: list[int]) -> None:
    """Each worker process imports from the tree: its ``PYTHONPATH`` starts with it."""
    for pid in pids:
        first = _environ(pid).get("PYTHONPATH", "").split(os.pathsep)[0]
        _check_under(tree, f"worker {pid}'s PYTHONPATH", first)


def _embedded() -> Any:
    """``orchestration.client.embedded``, or where it was before the restructure."""
    import importlib

    try:
        return importlib.import_module("orchestration.client.embedded")
    except ModuleNotFoundError:
        return importlib.import_module("orchestration.embedded")


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes and their children."""
    from bench.scenarios import _children, _cpu_seconds

    return sum(_cpu_seconds(p) for pid in pids for p in (pid, *_children(pid)))


def run_io(root: Path, tree: Path) -> dict[str, Any]:
    """1,000 one-second chat calls as one group on ONE asyncio worker (``bench.io``'s
    section 8a, Baton's side), after its warm-up group: ``baton_concurrency``'s figures."""
    from bench.io import KEY, BatonIO, IOSizes, baton_concurrency
    from bench.sides import Workdir
    from tests.llm_server import LLMServer

    server = _embedded().RedisServer(root / "redis")
    try:
        server.start()
        sz = IOSizes()
        with LLMServer((KEY,), quota_per_second=1e9, delay=sz.delay) as api:
            side = BatonIO(Workdir(root, server.url), concurrency=sz.aio_concurrency)
            try:
                side.start()
                _check_workers(tree, side.pids())
                log(f"io: {sz.calls} calls of {sz.delay:g} s, one asyncio worker")
                figures: dict[str, Any] = baton_concurrency(side, api, sz)
            finally:
                side.stop()
    finally:
        server.stop()
    return figures


def run_map(root: Path, tree: Path, n: int) -> dict[str, Any]:
    """A map of ``n`` no-op items (``bench.maps``' section 10, batch size 100) on one
    worker process of concurrency 2, after its warm-up map: wall time from
    ``run_workflow`` to the result, the map step's own time, and the worker's CPU."""
    import redis

    from bench import maps
    from bench.sides import Workdir
    from orchestration.client import WorkflowOrchestrator
    from orchestration.settings import BatonSettings

    embedded = _embedded()
    server = embedded.RedisServer(root / "redis")
    try:
        server.start()
        url = server.url
        r = redis.Redis.from_url(url)
        sz = maps.MapSizes()
        settings = BatonSettings(
            redis_url=url,
            key_prefix=maps.PREFIX,
            home=root / "home",
            agent_modules=["bench.agents"],
        )
        orch = WorkflowOrchestrator(url, settings=settings, local_workers=False)
        workers = embedded.LocalWorkers(
            url, [[]], concurrency=2, env=Workdir(root, url).env(), log_dir=root / "logs"
        )
        try:
            workers.start(orch.app)
            pids = [p.pid for p in workers.processes]
            _check_workers(tree, pids)
            maps.baton_map(orch, r, sz.warmup, sz)
            log(f"map of {n} items")
            cpu0 = _cpu(pids)
            res = maps.baton_map(orch, r, n, sz)
            cpu = _cpu(pids) - cpu0
        finally:
            workers.stop()
            orch.close()
            r.close()
    finally:
        server.stop()
    return {"n": n, "wall_s": res["wall_s"], "map_s": res["map_s"], "cpu_s": cpu}


def _stopping(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (``bench.compare`` stopping this run) or SIGINT (Ctrl-C) unwinds as an
    exit, once: every ``finally`` above then stops its servers and workers, and a second
    signal does not cut that short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in SCENARIOS:
        print(f"usage: python -P {__file__} {{{','.join(SCENARIOS)}}}", file=sys.stderr)
        return 2
    scenario = args[0]
    signal.signal(signal.SIGTERM, _stopping)
    signal.signal(signal.SIGINT, _stopping)
    tree = Path.cwd().resolve()
    token = os.environ.get(TOKEN_VAR) or os.urandom(8).hex()
    os.environ[TOKEN_VAR] = token  # (inherited by every process the run starts)

    import bench
    import orchestration
    import tests

    modules = {
        name: _check_under(tree, f"{name}.__file__", mod.__file__)
        for name, mod in (("orchestration", orchestration), ("bench", bench), ("tests", tests))
    }
    root = Path(tempfile.mkdtemp(prefix=f"baton-compare-{scenario}-{token}-"))
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "io": lambda: run_io(root, tree),
        "map100k": lambda: run_map(root, tree, MAP_ITEMS["map100k"]),
        "map10k": lambda: run_map(root, tree, MAP_ITEMS["map10k"]),
    }
    keep = False  # the run's logs (redis, workers), kept when it failed
    try:
        figures = runs[scenario]()
    except Exception:
        keep = True
        raise
    finally:
        left = strays(token)
        if left:
            log(f"killed {len(left)} stray process(es): {left}")
        if keep:
            log(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    line = {"scenario": scenario, "tree": str(tree), "modules": modules}
    print(json.dumps({**line, "figures": figures, "strays": left}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
