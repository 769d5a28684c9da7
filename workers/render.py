"""What the ``baton`` command shows: progress bars while workflows run, what a finished
workflow made, a workflow's events one a line (``render_tables.py`` has the tables). (With
the ``cli*.py`` modules, the only code that prints.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from orchestration.flow.broker import serve_hint
from orchestration.model import (
    StreamEvent,
    WorkflowContext,
    WorkflowStatus,
    WorkflowStatusReport,
)
from orchestration.model.bounds import stored_ms
from orchestration.model.names import Event
from workers.render_tables import when

# No markup: what is printed is data (errors, names), shown verbatim, brackets included.
console = Console(soft_wrap=True, markup=False, highlight=False)


def step_name(step_id: str) -> str:
    """A step as people read it: a map's item is ``step[index]`` (as the engine names it),
    its batch (``step#N`` inside) ``step batch N``."""
    step, _, batch = step_id.partition("#")
    return f"{step} batch {batch}" if batch else step_id


def _running_text(r: WorkflowStatusReport) -> str:
    if r.status != WorkflowStatus.RUNNING:
        text = r.status.value
        if r.error:
            text += f" at {r.failed_step}: {r.error}"
        return text
    steps = ", ".join(
        f"{step_name(s.step_id)} {s.agent_id}.{s.task_type}" for s in r.running_steps[:4]
    )
    more = f" +{len(r.running_steps) - 4}" if len(r.running_steps) > 4 else ""
    maps = "".join(
        f" · map {m.step} {m.done + m.failed:,}/{m.total:,}"
        for m in r.maps
        if m.total is not None and m.done + m.failed < m.total
    )
    return (f"running {steps}{more}" if steps else "running") + maps


def render_progress(
    orch: Any, ids: list[str], timeout: float | None = None
) -> list[WorkflowStatusReport]:
    """A progress bar per workflow, its running steps and agents, until all are terminal."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[state]}"),
    )
    final: list[WorkflowStatusReport] = []
    check_workers_at = time.monotonic() + 5  # then ask, once, whether anyone serves them
    with Progress(*columns, console=console, transient=False) as progress:
        bars: dict[str, Any] = {}
        for reports in orch.watch(ids, timeout):
            if check_workers_at and time.monotonic() > check_workers_at:
                check_workers_at = 0
                for r in reports:
                    if r.status == WorkflowStatus.RUNNING and not r.running_steps:
                        warn_unserved(orch, r.workflow_id)
            for r in reports:
                done, total = (int(x) for x in r.progress.split("/"))
                if r.workflow_id not in bars:
                    bars[r.workflow_id] = progress.add_task(
                        f"{r.name[:28]:<28} {r.workflow_id[:8]}", total=total, state=""
                    )
                progress.update(bars[r.workflow_id], completed=done, state=_running_text(r))
            final = reports
    return final


def warn_unserved(orch: Any, workflow_id: str) -> str:
    """Say on stderr which queues the workflow waits on that no live worker consumes."""
    unserved = orch.unserved_queues(workflow_id)
    if not unserved:
        return ""
    what = f"no live worker consumes {', '.join(unserved)}"
    hint = serve_hint(unserved)
    click.echo(
        f"baton: warning: {workflow_id} waits, and {what} (hint: start one: {hint})",
        err=True,
    )
    return what


def outcome_lines(ctx: WorkflowContext) -> list[str]:
    """What a finished workflow made: its outcome, each report (absolute path and
    headline figures) and each parallel group's success."""
    took = ""
    if ctx.finished_at:
        start, end = datetime.fromisoformat(ctx.created_at), datetime.fromisoformat(ctx.finished_at)
        took = f" in {(end - start).total_seconds():.1f}s"
    lines = [f"{ctx.name} {ctx.workflow_id}: {ctx.status.value}{took}"]
    if ctx.status != WorkflowStatus.COMPLETED:
        return [*lines, f"  failed at {ctx.failed_step}: {ctx.error}"]
    for key, value in ctx.shared_data.items():
        if isinstance(value, dict) and "report_path" in value:
            lines.append(f"  report: {Path(value['report_path']).resolve()}")
            for name, figure in (value.get("headline") or {}).items():
                lines.append(f"    {name}: {figure}")
        if isinstance(value, dict) and "success_rate" in value:
            lines.append(
                f"  parallel group '{key}': {value['successful_tasks']}/{value['total_tasks']} "
                f"succeeded in {value['total_execution_time']:.2f}s"
            )
    return lines


def text_of(value: Any) -> str:
    """A value as it reads: a string as it is, anything else as compact JSON, its text as
    text (no ``\\u00fc`` escapes)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def event_line(e: StreamEvent, children: Mapping[str, str] | None = None) -> str:
    """One stream event as one line: time, step, what happened. A map's items are named
    ``step[index]``, its batches ``step batch N``; ``children``: the sub-workflow of each
    step that runs one (parked as a wait, but not one)."""
    children = children or {}
    at = e.at.strftime("%H:%M:%S.%f")[:-3]
    batch = "#" in (e.step or "")
    step = f" {step_name(e.step)}" if e.step else ""
    if e.event == Event.EMITTED:
        what = text_of(e.data)
    elif e.event == Event.STEP_STARTED:
        what = "started" if batch else "step started"
    elif e.event == Event.PROGRESS and isinstance(e.data, dict):
        total = e.data.get("total")
        what = f"progress {e.data.get('done')}" + (f"/{total}" if total is not None else "")
        what += f" {text_of(e.data['message'])}" if e.data.get("message") else ""
    elif e.event == Event.MAP_PROGRESS and isinstance(e.data, dict):
        d = e.data
        what = f"map {d.get('done', 0):,} done, {d.get('failed', 0):,} failed of {d.get('total'):,}"
    elif e.event == Event.COMMITTED:
        what = f"{e.result or 'committed'} (version {e.version})"
        what += f": {e.error}" if e.error else ""
        what += f"; workflow {e.status}" if e.status and e.status != "running" else ""
    elif e.event == Event.STATUS:
        what = f"workflow {e.status}"
        if e.status == WorkflowStatus.WAITING and children:
            what += f" (on sub-workflow {', '.join(children.values())})"
    elif e.event == Event.WAIT_PARKED and e.step is not None and e.step in children:
        what = f"started sub-workflow {children[e.step]}"
    elif e.event == Event.WAIT_PARKED and isinstance(e.data, dict):
        name, due = e.data.get("name"), stored_ms(e.data.get("due_ms"))
        until = when(datetime.fromtimestamp(due / 1000, UTC).isoformat(), True) if due else ""
        what = f"waits for signal {name}" if name else "waits"
        what += f" until {until}" if until else ""
    else:
        what = e.event.replace("_", " ") + (f": {e.error}" if e.error else "")
    return f"{at}{step} {what}"
