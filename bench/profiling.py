"""Where a Baton step's time goes: timing wrappers installed in a profiling session only.

With ``BENCH_PROFILE=<dir>`` in a worker's environment, ``bench.agents`` calls
:func:`install_if_requested`, which wraps the engine's phases (plan load, begin_step,
agent call, commit, hand-on) and hooks Celery's signals (received in the consumer,
prerun/postrun in the pool child). One JSON line per step goes to ``<dir>/steps-<pid>``.
Nothing in the engine changes; the wrappers add a few microseconds per phase, and only
the profiling session (not the timed scenarios) has them.
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
_phases: dict[str, float] = {}


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _phases[name] = _phases.get(name, 0.0) + time.perf_counter() - t0

    return wrapper


def _write(where: Path, record: dict[str, Any]) -> None:
    with open(where / f"steps-{os.getpid()}.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


def install_if_requested() -> None:
    """Wrap the engine's phases and hook Celery's signals, if ``BENCH_PROFILE`` is set."""
    raw = os.environ.get("BENCH_PROFILE")
    if not raw:
        return
    where = Path(raw)
    where.mkdir(parents=True, exist_ok=True)

    from celery.signals import task_postrun, task_prerun, task_received

    from agents.base import TaskType
    from orchestration.store import StateStore
    from workers.runner import Engine

    StateStore.plan = _timed("plan_load", StateStore.plan)  # type: ignore[method-assign]
    StateStore.begin_step = _timed("begin_step", StateStore.begin_step)  # type: ignore[method-assign]
    StateStore.commit = _timed("commit", StateStore.commit)  # type: ignore[method-assign]
    TaskType.run = _timed("agent", TaskType.run)  # type: ignore[method-assign]
    TaskType.validate_params = _timed("validate_params", TaskType.validate_params)  # type: ignore[method-assign]
    Engine._hand_on = _timed("hand_on", Engine._hand_on)  # type: ignore[method-assign]
    Engine.run_step = _timed("run_step", Engine.run_step)  # type: ignore[method-assign]

    @task_received.connect(weak=False)
    def _received(request: Any = None, **_: Any) -> None:
        args = list(getattr(request, "args", None) or [])
        if len(args) == 2 and str(args[1]).startswith("step_"):
            _write(where, {"wid": args[0], "step": args[1], "received": time.time()})

    @task_prerun.connect(weak=False)
    def _prerun(task_id: str = "", args: Any = None, **_: Any) -> None:
        _phases.clear()
        _current.clear()
        _current.update(prerun=time.time(), t0=time.perf_counter(), args=list(args or []))

    @task_postrun.connect(weak=False)
    def _postrun(**_: Any) -> None:
        args = _current.get("args") or []
        if len(args) != 2 or not str(args[1]).startswith("step_"):
            return
        total = time.perf_counter() - _current["t0"]
        _write(
            where,
            {
                "wid": args[0],
                "step": args[1],
                "prerun": _current["prerun"],
                "postrun": time.time(),
                "in_task": total,
                **_phases,
            },
        )


def load_steps(where: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Merge the received/prerun/postrun records per (workflow_id, step_id)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(where.glob("steps-*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            merged.setdefault((rec.pop("wid"), rec.pop("step")), {}).update(rec)
    return merged


def breakdown(where: Path, steps_per_workflow: int) -> dict[str, float]:
    """Median milliseconds per phase of a mid-chain step (steps 2..n of a sequential run).

    ``hop`` is the previous step's postrun to this step's receipt (ack, broker, fetch);
    ``pool`` receipt to prerun (hand-off to the pool child); ``celery_after`` the run_step
    return to postrun (result handling and publishing the chain's next message).
    """
    merged = load_steps(where)
    rows: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        rows.setdefault(name, []).append(seconds * 1000)

    for (wid, step), rec in merged.items():
        n = int(step.removeprefix("step_"))
        if "prerun" not in rec or "received" not in rec:
            continue
        prev = merged.get((wid, f"step_{n - 1}"))
        if n > 1 and prev and "postrun" in prev:
            add("hop", rec["received"] - prev["postrun"])
        add("pool", rec["prerun"] - rec["received"])
        for phase in ("plan_load", "begin_step", "validate_params", "commit", "hand_on"):
            add(phase, rec.get(phase, 0.0))
        add("agent", rec.get("agent", 0.0))
        other = rec["run_step"] - sum(
            rec.get(p, 0.0) for p in ("plan_load", "begin_step", "agent", "commit", "hand_on")
        ) - rec.get("validate_params", 0.0)
        add("engine_other", other)
        add("celery_after", rec["in_task"] - rec["run_step"])
        add("in_task", rec["in_task"])
        if n == steps_per_workflow:
            continue
    return {k: statistics.median(v) for k, v in rows.items()}
