"""``python -m bench.maps [--quick] [--runs N]``: maps over run-time lists, measured.

1. **A map of 10,000 no-op items against Celery's ways of the same fan-out**: a Baton
   workflow whose first step returns a list of ``n`` items (``bench.items``) and whose
   second maps ``bench.noop`` over it (``batch_size`` 100 items per task message, the
   items' outputs collected into one list, kept in the workflow's shared data); against a
   Celery chord of ``n`` ``bare.noop_item`` tasks, and a chord over
   ``bare.noop_item.chunks(..., 100)`` (a ``celery.starmap`` task per 100 items). Both
   Celery callbacks (``bare.collect_items``) return every item's result, in order: the
   chunked chord's callback gets a list per chunk and flattens it. Wall time from
   ``run_workflow()`` / ``apply_async()`` (building the signatures included) to the
   client holding the final result. Targets: the map <= 0.5x the chord and <= 1.0x the
   chunked chord.
2. **Scaling**: the same map at 1,000, 10,000 and 100,000 items; the task messages its
   workers sent (``bench/msglog.py``: JSON body + headers of every message, the list
   step's own left out) and the Redis memory the workflow holds once done (``MEMORY
   USAGE`` of every key of the workflow, and the growth of ``used_memory``), per item.
   Targets: bytes per message flat (the largest at the largest size <= 1.05x that at the
   smallest), memory per item not growing with the count (<= 1.25x), and the 100,000-item
   map completing on the machine's cores (2). Celery's chord and chunked chord at the
   smallest size are logged the same way, for comparison.

Each run owns a private redis-server and its workers (one Baton worker process of
concurrency 2 on every queue, as ``bench/waits.py``; one bare Celery worker of
concurrency 2 on ``agent.bare``, as ``bench/sides.py``); which side goes first alternates
between runs, and Redis is flushed between them. A map or chord whose result has not come
within ``timeout`` is lost: its figures are ``None``, the run is counted in the run's
``lost``, and the bench goes on.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
from celery import chord, group

from bench import msglog
from bench.bare import QUEUE
from bench.sides import BareSide, Lost, Workdir, counted
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.errors import WorkflowTimeout
from orchestration.model import WorkflowStatus
from orchestration.settings import BatonSettings
from orchestration.state.keys import WorkflowKeys

PREFIX = "bench"
LIST_TASK = "bench.items"  # the list step's message: not the map's


def log(msg: str) -> None:
    print(f"[bench.maps {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class MapSizes:
    """How much to run; ``quick()`` is for the smoke test."""

    items: int = 10_000  # the timed comparison with Celery
    batch_size: int = 100  # items per Baton task message
    chunk: int = 100  # items per Celery chunk
    scale: tuple[int, ...] = (1_000, 10_000, 100_000)
    warmup: int = 200
    timeout: float = 1800.0

    @classmethod
    def quick(cls) -> MapSizes:
        # (quick sizes straddle Redis's compact hash encoding: the full run's are past it)
        return cls(items=1_000, scale=(500, 2_000), warmup=50, timeout=300.0)


def ts(iso: str | None) -> float:
    if not iso:
        raise RuntimeError("a step result without its time")
    return datetime.fromisoformat(iso).timestamp()


def used_memory(r: redis.Redis[bytes]) -> int:
    return int(r.info("memory")["used_memory"])


def settle(r: redis.Redis[bytes], secs: float = 0.5) -> int:
    """``used_memory`` once the queues are empty and the buffers flushed."""
    time.sleep(secs)
    return used_memory(r)


# --- Baton: a list step, then a map over it ----------------------------------------------


def map_flow(n: int, batch_size: int) -> dict[str, Any]:
    return {"name": f"map {n}", "steps": [
        {"agent_id": "bench", "task_type": "items", "parameters": {"n": n},
         "output_key": "list"},
        {"map": {"over": "list.items", "agent_id": "bench", "task_type": "noop"},
         "output_key": "out", "aggregate": "collect", "batch_size": batch_size},
    ]}  # fmt: skip


def baton_map(
    orch: WorkflowOrchestrator, r: redis.Redis[bytes], n: int, sz: MapSizes
) -> dict[str, Any]:
    """One map of ``n`` items, checked: its times and the memory its workflow holds."""
    before = settle(r, 0.2)
    t0 = time.perf_counter()
    wid = orch.run_workflow(map_flow(n, sz.batch_size))
    try:
        ctx = orch.wait(wid, timeout=sz.timeout)
    except WorkflowTimeout as exc:
        raise Lost(str(exc)) from None
    wall = time.perf_counter() - t0
    if ctx.status != WorkflowStatus.COMPLETED:
        raise RuntimeError(f"map of {n} items: workflow {wid} ended {ctx.status}: {ctx.error}")
    out = ctx.shared_data.get("out")
    if not isinstance(out, list) or len(out) != n:
        got = len(out) if isinstance(out, list) else type(out).__name__
        raise RuntimeError(f"map of {n} items: its output holds {got}, not {n} results")
    bad = next((i for i, x in enumerate(out) if x != {"ok": True}), None)
    if bad is not None:
        raise RuntimeError(f"map of {n} items: item {bad}'s result is {out[bad]!r}")
    listed = ts(ctx.task_results["step_1"].finished_at)
    mapped = ts(ctx.task_results["step_2"].finished_at)
    per_key = {}
    for key in WorkflowKeys(PREFIX, wid).all():
        size = r.memory_usage(key, samples=0)
        if size:
            per_key[key.rsplit("}", 1)[-1].lstrip(":") or "meta"] = int(size)
    grown = settle(r) - before
    return {
        "n": n,
        "workflow_id": wid,
        "wall_s": wall,
        "map_s": mapped - listed,
        "keys_bytes": sum(per_key.values()),
        "keys_bytes_per_item": sum(per_key.values()) / n,
        "per_key": per_key,
        "used_memory_per_item": grown / n,
    }


def _message_figures(messages: list[dict[str, Any]], n: int) -> dict[str, Any]:
    sizes = [int(m["bytes"]) for m in messages]
    names: dict[str, int] = {}
    for m in messages:
        names[m["task"]] = names.get(m["task"], 0) + 1
    return {
        "messages": len(sizes),
        "by_task": names,
        "bytes_total": sum(sizes),
        "bytes_per_message_median": statistics.median(sizes) if sizes else 0,
        "bytes_per_message_max": max(sizes, default=0),
        "message_bytes_per_item": sum(sizes) / n,
    }


def baton_scale(
    orch: WorkflowOrchestrator, r: redis.Redis[bytes], n: int, sz: MapSizes, logdir: Path
) -> dict[str, Any]:
    """A map of ``n`` items with every task message logged: bytes per message and per item."""
    msglog.enable(logdir, True)
    try:
        res = baton_map(orch, r, n, sz)
        time.sleep(0.3)  # the last announcements land after the commit that sent them
    finally:
        msglog.enable(logdir, False)
    messages = [m for m in msglog.collect(logdir) if m["task"] != LIST_TASK]
    return {**res, **_message_figures(messages, n)}


Losses = list[dict[str, Any]]  # one run's lost maps and chords (``bench.sides.counted``)


def baton_session(
    root: Path, url: str, r: redis.Redis[bytes], sz: MapSizes, lost: Losses
) -> dict[str, Any]:
    work = Workdir(root, url)

    def kept(what: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        return counted(lost, "baton", f"10. {what}", sz.timeout, run, log)

    settings = BatonSettings(
        redis_url=url, key_prefix=PREFIX, home=root / "home", agent_modules=["bench.agents"]
    )
    orch = WorkflowOrchestrator(url, settings=settings, local_workers=False)
    workers = LocalWorkers(url, [[]], concurrency=2, env=work.env(), log_dir=root / "logs")
    workers.start(orch.app)
    try:
        kept("warm-up map", lambda: baton_map(orch, r, sz.warmup, sz))  # imports, pools, caches
        timed = kept(f"map of {sz.items:,}", lambda: baton_map(orch, r, sz.items, sz))
        log(f"baton map of {sz.items:,}: {_brief(timed)}")
        scale = []
        for n in sz.scale:
            scale.append(kept(f"map of {n:,}", partial(baton_scale, orch, r, n, sz, work.msglog)))
            log(f"baton map of {n:,}, messages logged: {_brief(scale[-1])}")
        return {"timed": timed, "scale": scale}
    finally:
        workers.stop()
        orch.close()


def _brief(res: dict[str, Any] | None) -> dict[str, Any] | str:
    if res is None:
        return "lost"
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()
            if k not in ("per_key", "by_task", "workflow_id")}  # fmt: skip


# --- Celery: a chord of n tasks, and a chord over chunks of them -------------------------


def _canvas(side: BareSide, n: int, chunk: int | None) -> Any:
    item, collect = side._task("noop_item"), side._task("collect_items")
    if chunk is None:
        return chord(group(item.s(i) for i in range(n)), collect.s())
    # A chunk is a ``celery.starmap`` task, which the router sends to the control queue
    # (Celery's own tasks go there), which a bare worker does not consume: sent to its queue.
    chunks = item.chunks(zip(range(n)), chunk).group()
    for sig in chunks.tasks:
        sig.set(queue=QUEUE)
    return chord(chunks, collect.s())


def celery_chord(
    side: BareSide, r: redis.Redis[bytes], n: int, chunk: int | None, timeout: float
) -> dict[str, Any]:
    """``chord`` of ``n`` items (over ``chunks`` of ``chunk`` if given), checked: wall time
    from building the signatures to the callback's result, and Redis memory per item."""
    before = settle(r, 0.2)
    t0 = time.perf_counter()
    res = _canvas(side, n, chunk).apply_async()
    meta = side.result(res.id, timeout)
    wall = time.perf_counter() - t0
    out = meta["result"]
    if not isinstance(out, list) or len(out) != n or any(x != {"ok": True} for x in out):
        got = len(out) if isinstance(out, list) else type(out).__name__
        raise RuntimeError(f"celery chord of {n} (chunk {chunk}): callback returned {got}")
    return {
        "n": n,
        "chunk": chunk,
        "wall_s": wall,
        "used_memory_per_item": (settle(r) - before) / n,
    }


def celery_messages(
    side: BareSide, r: redis.Redis[bytes], n: int, chunk: int | None, sz: MapSizes, logdir: Path
) -> dict[str, Any]:
    """The same chord with every task message logged (the client's included: it sends the
    header's)."""
    old = os.environ.get("BENCH_MSG_LOG")
    os.environ["BENCH_MSG_LOG"] = str(logdir)
    msglog.enable(logdir, True)
    try:
        celery_chord(side, r, n, chunk, sz.timeout)
        time.sleep(0.3)
    finally:
        msglog.enable(logdir, False)
        if old is None:
            os.environ.pop("BENCH_MSG_LOG", None)
        else:
            os.environ["BENCH_MSG_LOG"] = old
    return {"n": n, "chunk": chunk, **_message_figures(msglog.collect(logdir), n)}


def celery_session(
    root: Path, url: str, r: redis.Redis[bytes], sz: MapSizes, lost: Losses
) -> dict[str, Any]:
    work = Workdir(root, url)
    side = BareSide(work)

    def chord_of(n: int, chunk: int | None, logged: bool = False) -> dict[str, Any] | None:
        what = f"chord of {n:,}" + (f" over chunks of {chunk}" if chunk else "")
        if logged:
            run = partial(celery_messages, side, r, n, chunk, sz, work.msglog)
        else:
            run = partial(celery_chord, side, r, n, chunk, sz.timeout)
        return counted(lost, "celery", f"10. {what}", sz.timeout, run, log)

    side.start()
    try:
        chord_of(sz.warmup, None)
        chord_of(sz.warmup, sz.chunk)
        plain = chord_of(sz.items, None)
        log(f"celery chord of {sz.items:,}: {_brief(plain)}")
        chunked = chord_of(sz.items, sz.chunk)
        log(f"celery chord over chunks({sz.chunk}) of {sz.items:,}: {_brief(chunked)}")
        small = sz.scale[0]
        msgs = {"chord": chord_of(small, None, True), "chunked": chord_of(small, sz.chunk, True)}
        log(f"celery messages at {small:,}: " + str({k: _brief(v) for k, v in msgs.items()}))
        return {"chord": plain, "chunked": chunked, "messages": msgs}
    finally:
        side.stop()


def run_once(root: Path, sz: MapSizes, baton_first: bool = True) -> dict[str, Any]:
    """One full run in ``root``: a private redis-server; Baton's session and Celery's, one
    after the other, Redis flushed between them."""
    server = RedisServer(root / "redis").start()
    try:
        r = redis.Redis.from_url(server.url)
        compact = r.config_get("hash-max-*-entries")  # (listpack, or ziplist before 7)
        out: dict[str, Any] = {
            "sizes": {**asdict(sz), "scale": list(sz.scale)},
            "cores": os.cpu_count(),
            "hash_compact_entries": int(next(iter(compact.values()), 0)),
            "lost": [],
        }
        order = ["baton", "celery"] if baton_first else ["celery", "baton"]
        for name in order:
            t0 = time.perf_counter()
            session = baton_session if name == "baton" else celery_session
            try:
                out[name] = session(root / name, server.url, r, sz, out["lost"])
            finally:
                r.flushall()
            log(f"{name} session: {time.perf_counter() - t0:.1f}s")
        r.close()
        return out
    finally:
        server.stop()


def run(root: Path, runs: int, quick: bool = False) -> list[dict[str, Any]]:
    sz = MapSizes.quick() if quick else MapSizes()
    out = []
    for i in range(runs):
        log(f"run {i + 1}/{runs}")
        sub = root / f"maps-{i + 1}"
        sub.mkdir(parents=True, exist_ok=True)
        out.append(run_once(sub, sz, baton_first=i % 2 == 0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-maps-") as tmp:
        out = run(Path(tmp), a.runs, a.quick)
    print(report(out))
    return 0


# --- The report: section 10 of docs/benchmarks.md ----------------------------------------


def _span(xs: list[float], fmt: str = "{:.2f}", unit: str = "") -> str:
    if not xs:  # (every run's lost)
        return "–"
    lo, hi = fmt.format(min(xs)), fmt.format(max(xs))
    return (lo if lo == hi else f"{lo}–{hi}") + unit


def done(rows: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """The figures of the runs whose map or chord was not lost."""
    return [x for x in rows if x is not None]


def ratios(runs: list[dict[str, Any]], other: str) -> list[float]:
    """Baton's map wall time ÷ the Celery chord's (``chord`` or ``chunked``), per run
    (a run whose map or chord was lost left out)."""
    pairs = [(r["baton"]["timed"], r["celery"][other]) for r in runs]
    return [b["wall_s"] / c["wall_s"] for b, c in pairs if b and c]


def scale_ratio(runs: list[dict[str, Any]], field: str) -> list[float]:
    """The largest map's ``field`` ÷ the smallest's, per run (a lost one left out)."""
    out = []
    for r in runs:
        first, last = r["baton"]["scale"][0], r["baton"]["scale"][-1]
        if first and last:
            small, big = first[field], last[field]
            out.append(big / small if small else float("nan"))
    return out


def section(runs: list[dict[str, Any]]) -> str:
    """Section 10 of docs/benchmarks.md."""
    sz = runs[0]["sizes"]
    return "\n".join([
        "## 10. Maps over run-time lists\n",
        f"Measured by `bench/maps.py` ({len(runs)} run(s); each a private redis-server, one"
        " worker process of concurrency 2 per side, the sides one after the other; figures"
        " are min–max over runs). **Baton**: a workflow whose first step returns a list of"
        f" {sz['items']:,} integers and whose second is a `map` of the no-op `bench.noop`"
        f" over it, `batch_size` {sz['batch_size']} (items per task message), `aggregate:"
        " collect` (every item's output, in order, one list in the shared data; checked). Its"
        " wall time is from `run_workflow()` to `wait()` returning, the list step included;"
        " *the map step alone* is from the list step's commit to the map's. **Celery**: a"
        f" chord of {sz['items']:,} `noop_item` tasks, and a chord over"
        f" `noop_item.chunks(..., {sz['chunk']})` (one `celery.starmap` task per"
        f" {sz['chunk']} items), from building the signatures to the callback's result;"
        " both callbacks return every item's result (the chunked chord's gets a list per"
        " chunk and flattens it; checked).\n",
        report(runs),
        "",
    ])  # fmt: skip


def report(runs: list[dict[str, Any]]) -> str:
    sz = runs[0]["sizes"]
    n, chunk, batch = sz["items"], sz["chunk"], sz["batch_size"]
    b = done([r["baton"]["timed"] for r in runs])
    c = done([r["celery"]["chord"] for r in runs])
    k = done([r["celery"]["chunked"] for r in runs])

    def col(rows: list[dict[str, Any]], field: str, fmt: str = "{:.2f}") -> str:
        return _span([float(x[field]) for x in rows], fmt)

    timed = "\n".join([
        f"| {n:,} items | Baton map (batch {batch}) | Celery chord | Celery chord over"
        f" chunks of {chunk} | target |",
        "|---|---|---|---|---|",
        f"| wall time (s) | {col(b, 'wall_s')} | {col(c, 'wall_s')} | {col(k, 'wall_s')} | |",
        f"| Baton ÷ Celery | – | {_span(ratios(runs, 'chord'), unit='×')} |"
        f" {_span(ratios(runs, 'chunked'), unit='×')} | ≤ 0.5× the chord, ≤ 1.0× chunked |",
        f"| the map step alone: list committed → map committed (s) | {col(b, 'map_s')} | – | – | |",
        f"| per-item results kept | yes: a list of {n:,} in the shared data | yes: the"
        f" callback's list of {n:,} | the callback gets {n // chunk:,} lists of {chunk},"
        " flattens them | |",
        f"| Redis `used_memory` growth per item, once done (bytes) |"
        f" {col(b, 'used_memory_per_item', '{:,.0f}')} |"
        f" {col(c, 'used_memory_per_item', '{:,.0f}')} |"
        f" {col(k, 'used_memory_per_item', '{:,.0f}')} | |",
    ])  # fmt: skip

    lines = [
        "| items | wall (s) | map step (s) | task messages | bytes per message, median / max"
        " | message bytes per item | Redis memory per item: the workflow's keys (bytes)"
        " | `used_memory` growth per item (bytes) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, size in enumerate(sz["scale"]):
        s = done([r["baton"]["scale"][i] for r in runs])
        lines.append(
            f"| {size:,} | {col(s, 'wall_s')} | {col(s, 'map_s')} |"
            f" {col(s, 'messages', '{:,.0f}')} |"
            f" {col(s, 'bytes_per_message_median', '{:,.0f}')} /"
            f" {col(s, 'bytes_per_message_max', '{:,.0f}')} |"
            f" {col(s, 'message_bytes_per_item', '{:,.1f}')} |"
            f" {col(s, 'keys_bytes_per_item', '{:,.0f}')} |"
            f" {col(s, 'used_memory_per_item', '{:,.0f}')} |"
        )  # fmt: skip
    small = sz["scale"][0]
    compact = int(runs[0].get("hash_compact_entries", 0))
    for kind, label in (("chord", "Celery chord"), ("chunked", f"Celery chord, chunks of {chunk}")):
        m = done([r["celery"]["messages"][kind] for r in runs])
        lines.append(
            f"| {small:,} ({label}) | – | – | {col(m, 'messages', '{:,.0f}')} |"
            f" {col(m, 'bytes_per_message_median', '{:,.0f}')} /"
            f" {col(m, 'bytes_per_message_max', '{:,.0f}')} |"
            f" {col(m, 'message_bytes_per_item', '{:,.1f}')} | – | – |"
        )  # fmt: skip
    big = sz["scale"][-1]
    sizes: dict[str, list[float]] = {}
    for last in done([r["baton"]["scale"][-1] for r in runs]):
        for key, size in last["per_key"].items():
            sizes.setdefault(key, []).append(size / big)
    keys = sorted(sizes, key=lambda key: -max(sizes[key]))
    per_key = ", ".join(
        f"`{key}` " + _span(sizes[key], "{:,.0f}") for key in keys if max(sizes[key]) >= 0.5
    )
    return "\n".join([
        timed,
        "",
        f"**Scaling** (Baton, the same map at {', '.join(f'{x:,}' for x in sz['scale'])}"
        " items, every task message logged by `bench/msglog.py`: its JSON body and headers;"
        " the list step's message left out). Memory is what the finished workflow holds:"
        " `MEMORY USAGE` of each of its keys (its list of items and the collected outputs"
        " included), and the growth of `INFO memory` `used_memory` over the run. (Redis"
        f" keeps a hash of up to {compact:,} fields in a compact encoding; a map's hash has"
        " a field per item (its result) and one per batch (its items), so below about"
        f" {compact:,} items its memory per item is smaller than the linear figure here.)"
        f" Celery's messages at {small:,} items below it, for comparison (the client sends"
        " the header's; the largest message is the callback's, which carries every item's"
        " result; Celery's memory is the `used_memory` growth above).\n",
        "\n".join(lines),
        "",
        f"Per key, bytes per item at {big:,} items: {per_key or '–'}.",
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
