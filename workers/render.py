"""What the ``baton`` command shows: progress bars while workflows run, what a finished
workflow made, and tables that keep ids whole. (With the ``cli*.py`` modules, the only code
that prints.)
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestration.flow.broker import serve_hint
from orchestration.model import (
    Checkpoint,
    StreamEvent,
    WaitingStep,
    WorkflowContext,
    WorkflowStatus,
    WorkflowStatusReport,
    dumps,
)
from orchestration.state.limiter import BudgetUse

# No markup: what is printed is data (errors, names), shown verbatim, brackets included.
console = Console(soft_wrap=True, markup=False, highlight=False)


def _running_text(r: WorkflowStatusReport) -> str:
    if r.status != WorkflowStatus.RUNNING:
        text = r.status.value
        if r.error:
            text += f" at {r.failed_step}: {r.error}"
        return text
    steps = ", ".join(f"{s.step_id} {s.agent_id}.{s.task_type}" for s in r.running_steps[:4])
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


def keep_whole(table: Table, column: int) -> None:
    """Keep a column's values whole (ids): the other columns shrink or wrap instead."""
    table.columns[column].no_wrap = True
    table.columns[column].overflow = "fold"
    table.columns[column].min_width = 36


def event_line(e: StreamEvent) -> str:
    """One stream event as one line: time, step, what happened."""
    at = e.at.strftime("%H:%M:%S.%f")[:-3]
    step = f" {e.step}" if e.step else ""
    if e.event == "emitted":
        what = e.data if isinstance(e.data, str) else dumps(e.data)
    elif e.event == "progress" and isinstance(e.data, dict):
        total = e.data.get("total")
        what = f"progress {e.data.get('done')}" + (f"/{total}" if total is not None else "")
        what += f" {e.data['message']}" if e.data.get("message") else ""
    elif e.event == "map_progress" and isinstance(e.data, dict):
        d = e.data
        what = f"map {d.get('done', 0):,} done, {d.get('failed', 0):,} failed of {d.get('total'):,}"
    elif e.event == "committed":
        what = f"{e.result or 'committed'} (version {e.version})"
        what += f": {e.error}" if e.error else ""
        what += f"; workflow {e.status}" if e.status and e.status != "running" else ""
    elif e.event == "status":
        what = f"workflow {e.status}"
    else:
        what = e.event.replace("_", " ") + (f": {e.error}" if e.error else "")
    return f"{at}{step} {what}"


def limits_table(uses: list[BudgetUse]) -> Table:
    """``baton limits``: one row per limit and key, and who waits below it."""
    table = Table("limit", "key", "rate", "concurrency", "running", "waiting", "next in")
    table.columns[0].no_wrap = table.columns[1].no_wrap = True
    waiting: list[str] = []
    for u in uses:
        table.add_row(
            u.name + (" *" if u.overridden else ""),
            u.key or "–",
            u.rate or "–",
            str(u.concurrency or "–"),
            str(u.running),
            str(u.waiting),
            f"{u.next_free_in:.2f}s" if u.next_free_in else "now",
        )
        if u.waiters:
            more = f" (+{u.waiting - len(u.waiters)} more)" if u.waiting > len(u.waiters) else ""
            waiting.append(f"{u.name} {u.key or '–'} first waiting: {', '.join(u.waiters)}{more}")
    caption = ["* set at run time (baton limits set); baton limits reset NAME undoes it"]
    table.caption = "\n".join([*waiting, *caption])
    return table


def waiting_table(waits: list[WaitingStep]) -> Table:
    """``baton waiting``: one row per parked wait, ids whole."""
    table = Table("workflow", "step", "waits for", "since", "until")
    table.columns[0].no_wrap = True
    for w in waits:
        table.add_row(
            w.workflow_id,
            w.step_id,
            f"signal {w.name}" if w.name else f"workflow {w.child}" if w.child else "a time",
            w.since[:19],
            (w.until or "–")[:19],
        )
    return table


def status_table(r: WorkflowStatusReport) -> Table:
    """``baton status``: one row per known field, then links, maps and throttled steps."""
    table = Table(show_header=False, box=None)
    for key in (
        "workflow_id",
        "name",
        "status",
        "progress",
        "completion_percentage",
        "task_results",
        "shared_data_keys",
        "current_agent",
        "error",
        "failed_step",
        "created_at",
        "finished_at",
    ):
        value = getattr(r, key)
        if value not in (None, []):
            table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    for t in r.throttled_steps:
        table.add_row("throttled", f"{t.step} waits for {t.limit} ({t.why} limit)")
    if r.parent:
        table.add_row("parent", f"{r.parent} (its step {r.parent_step})")
    if r.children:
        table.add_row("sub-workflows", ", ".join(r.children))
    for m in r.maps:
        total = "?" if m.total is None else f"{m.total:,}"
        table.add_row("map", f"{m.step}: {m.done:,} done, {m.failed:,} failed of {total} items")
    return table


def workflows_table(reports: list[WorkflowStatusReport]) -> Table:
    """``baton list``: one row per workflow, ids whole."""
    table = Table("workflow_id", "name", "status", "progress", "created_at")
    keep_whole(table, 0)
    table.columns[1].max_width = 24
    for r in reports:
        name = f"{r.name} (in {r.parent[:8]})" if r.parent else r.name
        table.add_row(r.workflow_id, name, r.status.value, r.progress, r.created_at[:19])
    return table


def checkpoints_table(points: list[Checkpoint]) -> Table:
    """``baton checkpoints``: one row per committed version."""
    table = Table("version", "event", "step", "agent", "changed", "at")
    for column in table.columns[1:4]:
        column.no_wrap, column.overflow = True, "fold"
    for p in points:
        agent = f"{p.agent_id}.{p.task_type}" if p.agent_id else ""
        event = p.event if p.restored_to is None else f"{p.event} (to version {p.restored_to})"
        table.add_row(str(p.version), event, p.step or "", agent, ", ".join(p.changed), p.timestamp)
    return table


def agents_table(rows: list[dict[str, Any]]) -> Table:
    """``baton agents``: one row per agent, its queue and task types."""
    table = Table("agent", "queue", "task types", "description")
    for column in table.columns[:2]:
        column.no_wrap, column.overflow = True, "fold"
    for row in rows:
        table.add_row(
            row["agent_id"], row["queue"], ", ".join(row["task_types"]), row["description"]
        )
    return table
