"""Where a Baton step's time goes: timing wrappers installed in a profiling session only.

With ``BENCH_PROFILE=<dir>`` in a worker's environment, ``bench.agents`` calls
:func:`install_if_requested`, which wraps the engine's phases (whichever of the store's
and engine's methods exist: the engine is being developed, so nothing is assumed) and
hooks Celery's signals (received in the consumer, prerun/postrun in the pool child).
Times are *exclusive*: a wrapped call nested in another is charged to itself only, so the
phases of a step add up to its total. One JSON line per step goes to
``<dir>/steps-<pid>.jsonl``. The engine's code is not changed; each wrapper costs a few
microseconds, and only the profiling session (not the timed scenarios) has them.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_current: dict[str, Any] = {}
phases: dict[str, float] = {}
_stack: list[float] = []  # time spent in wrapped callees, per open wrapped call
_originals: list[tuple[Any, str, Any]] = []

# (module, class, method, phase name) wrapped when present.
WORKER_PHASES = (
    ("orchestration.state.reads", "StateReader", "plan", "plan_load"),
    ("orchestration.state.reads", "StateReader", "task", "plan_load"),
    ("orchestration.state.store", "StateStore", "begin_step", "begin_step"),
    ("orchestration.state.store", "StateStore", "commit", "commit"),
    ("orchestration.state.store", "StateStore", "append_history", "note"),
    ("agents.base", "TaskType", "validate_params", "validate_params"),
    ("agents.base", "TaskType", "run", "agent"),
    ("orchestration.flow.outbox", "Outbox", "outgoing", "outbox"),
    ("workers.steps", "StepRun", "__call__", "engine_other"),
    ("celery.canvas", "Signature", "apply_async", "publish"),
)
CLIENT_PHASES = (
    ("orchestration.client.orchestrator", None, "load_plan", "client_validate"),
    ("orchestration.state.store", "StateStore", "create", "client_create"),
    ("orchestration.flow.outbox", "Outbox", "outgoing", "client_outbox"),
    ("orchestration.state.reads", "StateReader", "status_of", "client_status"),
    ("orchestration.state.reads", "StateReader", "plan", "client_plan"),
    ("orchestration.state.store", "StateStore", "transition", "client_transition"),
    ("celery.canvas", "Signature", "apply_async", "client_publish"),
)


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``fn`` so its exclusive time adds to ``phases[name]``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if name == "publish" and not _stack and "run_step_total" in phases:
            _current["published_at"] = time.time()  # the tracer starts the chain's next send
        elif name == "commit":
            _current["published_at"] = time.time()  # the commit script pushes the next message
        _stack.append(0.0)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            inner = _stack.pop()
            label = name
            if name == "publish" and not _stack and "run_step_total" in phases:
                label = "celery_publish_next"  # Celery's tracer sending the chain's next task
            phases[label] = phases.get(label, 0.0) + dt - inner
            if _stack:
                _stack[-1] += dt
            if name == "engine_other":
                phases["run_step_total"] = phases.get("run_step_total", 0.0) + dt

    wrapper.__bench_timed__ = True  # type: ignore[attr-defined]
    return wrapper


def install(table: tuple[tuple[str, str | None, str, str], ...]) -> list[str]:
    """Wrap every listed function that exists; returns what was wrapped."""
    import importlib

    done = []
    for module, cls, attr, name in table:
        mod = importlib.import_module(module)
        owner: Any = getattr(mod, cls, None) if cls else mod
        fn = getattr(owner, attr, None) if owner is not None else None
        if fn is None or getattr(fn, "__bench_timed__", False):
            continue
        _originals.append((owner, attr, fn))
        setattr(owner, attr, timed(name, fn))
        done.append(f"{cls or module}.{attr}")
    return done


def uninstall() -> None:
    """Put back everything :func:`install` wrapped in this process."""
    while _originals:
        owner, attr, fn = _originals.pop()
        setattr(owner, attr, fn)


def _write(where: Path, record: dict[str, Any]) -> None:
    with open(where / f"steps-{os.getpid()}.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


def _step_args(args: Any) -> tuple[str, str] | None:
    args = list(args or [])
    if len(args) >= 2 and str(args[1]).startswith("step_"):
        return str(args[0]), str(args[1])
    return None


def install_if_requested() -> None:
    """Wrap the engine's phases and hook Celery's signals, if ``BENCH_PROFILE`` is set."""
    raw = os.environ.get("BENCH_PROFILE")
    if not raw:
        return
    where = Path(raw)
    where.mkdir(parents=True, exist_ok=True)
    from celery.signals import task_postrun, task_prerun, task_received

    install(WORKER_PHASES)

    @task_received.connect(weak=False)
    def _received(request: Any = None, **_: Any) -> None:
        ids = _step_args(getattr(request, "args", None))
        if ids:
            _write(where, {"wid": ids[0], "step": ids[1], "received": time.time()})

    @task_prerun.connect(weak=False)
    def _prerun(args: Any = None, **_: Any) -> None:
        phases.clear()
        _current.clear()
        _current.update(prerun=time.time(), t0=time.perf_counter(), ids=_step_args(args))

    @task_postrun.connect(weak=False)
    def _postrun(**_: Any) -> None:
        ids = _current.get("ids")
        if not ids:
            return
        in_task = time.perf_counter() - _current["t0"]
        rec = {"wid": ids[0], "step": ids[1], "prerun": _current["prerun"], "postrun": time.time()}
        if "published_at" in _current:
            rec["published_at"] = _current["published_at"]
        _write(where, {**rec, "in_task": in_task, **phases})


def load_steps(where: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Merge the received/prerun/postrun records per (workflow_id, step_id)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(where.glob("steps-*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            merged.setdefault((rec.pop("wid"), rec.pop("step")), {}).update(rec)
    return merged


WORKER_ORDER = (
    "hop",
    "pool",
    "plan_load",
    "begin_step",
    "validate_params",
    "agent",
    "engine_other",
    "outbox",
    "commit",
    "track",
    "note",
    "next_signature",
    "publish",
    "celery_other",
    "celery_publish_next",
    "in_task",
)


def breakdown(where: Path) -> dict[str, float]:
    """Median milliseconds per phase of a step, in the order a step goes through them.

    ``hop``: the previous step starting to publish this message to its receipt (broker, fetch);
    ``pool``: receipt to prerun (hand-off to the pool child); ``celery_other``: the rest
    of prerun..postrun outside the engine (Celery's tracer), apart from publishing the
    chain's next message (``celery_publish_next``).
    """
    merged = load_steps(where)
    rows: dict[str, list[float]] = {}
    for (wid, step), rec in merged.items():
        if "prerun" not in rec or "received" not in rec or "run_step_total" not in rec:
            continue
        head, _, tail = step.rpartition("_")
        prev = merged.get((wid, f"{head}_{int(tail) - 1}")) if tail.isdigit() else None
        if prev and "published_at" in prev:
            rows.setdefault("hop", []).append(rec["received"] - prev["published_at"])
        rows.setdefault("pool", []).append(rec["prerun"] - rec["received"])
        outside = rec["in_task"] - rec["run_step_total"] - rec.get("celery_publish_next", 0.0)
        rows.setdefault("celery_other", []).append(outside)
        for name in WORKER_ORDER:
            if name in rec and name not in ("in_task",):
                rows.setdefault(name, []).append(rec[name])
        rows.setdefault("in_task", []).append(rec["in_task"])
    return {k: statistics.median(rows[k]) * 1000 for k in WORKER_ORDER if k in rows}
