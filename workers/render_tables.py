"""The tables the ``baton`` command prints, made to be read at any width (80 columns and
up): a column that identifies a row or decides what to do (an id, a status, a signal's
name, a limit) is shown whole, on one line; the others are shortened, and the least needed
dropped, until the table fits the terminal. ``--json`` gives every field, whole.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.table import Table

from orchestration.model import Checkpoint, WaitingStep, WorkflowStatusReport
from orchestration.state.limiter import BudgetUse

GAP = 2  # cells between two columns (no borders, one cell of padding each side)


@dataclass(frozen=True)
class Column:
    header: str
    whole: bool = False  # identifies or decides: never shortened
    least: int = 8  # a shortened column is given at least this many cells...
    drop: bool = False  # ...unless it may be dropped when even that does not fit


def fitted(columns: list[Column], rows: list[list[str]], width: int) -> Table:
    """A table of ``rows`` at most ``width`` cells wide, its whole columns whole."""
    natural = [
        max([cell_len(c.header)] + [cell_len(r[i]) for r in rows]) for i, c in enumerate(columns)
    ]

    def least(i: int) -> int:
        return natural[i] if columns[i].whole else min(natural[i], columns[i].least)

    shown = list(range(len(columns)))
    for i in reversed(range(len(columns))):  # the rightmost droppable column goes first
        if sum(map(least, shown)) + GAP * (len(shown) - 1) <= width:
            break
        if columns[i].drop:
            shown.remove(i)
    widths = {i: least(i) for i in shown}
    # What is left goes to the shortened columns, a cell at a time to the narrowest.
    spare = width - sum(widths.values()) - GAP * (len(shown) - 1)
    short = [i for i in shown if widths[i] < natural[i]]
    while spare > 0 and short:
        i = min(short, key=lambda k: widths[k])
        widths[i] += 1
        spare -= 1
        short = [i for i in short if widths[i] < natural[i]]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for i in shown:
        table.add_column(columns[i].header, width=widths[i], no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    return table


def when(iso: str, seconds: bool = False) -> str:
    """An ISO time as month-day hours:minutes(:seconds), in the time zone it was written in;
    with its year when that is not this year's (a timeout next year, the far future)."""
    if not iso:
        return "–"
    start = 5 if iso[:4] == str(datetime.now(UTC).year) else 0
    return iso[start : 19 if seconds else 16].replace("T", " ")


def workflows_table(reports: list[WorkflowStatusReport], width: int) -> Table:
    """``baton list``: one row per workflow, its id and status whole."""
    columns = [
        Column("workflow_id", whole=True),
        Column("status", whole=True),
        Column("progress", whole=True),
        Column("name", least=10),
        Column("created", least=11, drop=True),
    ]
    rows = [[r.workflow_id, r.status.value, r.progress, r.name, when(r.created_at)]
            for r in reports]  # fmt: skip
    return fitted(columns, rows, width)


def checkpoints_table(points: list[Checkpoint], width: int) -> Table:
    """``baton checkpoints``: one row per committed version (the VERSION to roll back to)."""
    columns = [
        Column("version", whole=True),
        Column("event", whole=True),
        Column("step", whole=True),
        Column("changed", least=12),
        Column("agent", least=10, drop=True),
        Column("at", least=14, drop=True),
    ]
    rows = []
    for p in points:
        event = p.event if p.restored_to is None else f"{p.event} (to version {p.restored_to})"
        agent = f"{p.agent_id}.{p.task_type}" if p.agent_id else ""
        rows.append([str(p.version), event, p.step or "", ", ".join(p.changed), agent,
                     when(p.timestamp, seconds=True)])  # fmt: skip
    return fitted(columns, rows, width)


def waiting_table(waits: list[WaitingStep], width: int) -> RenderableType:
    """``baton waiting``: one row per parked wait: the workflow, its step, the signal it
    waits for (whole: it is what to send), until when."""
    columns = [
        Column("workflow", whole=True),
        Column("step", whole=True),
        Column("waits for", whole=True),
        Column("until", least=11, drop=True),
        Column("since", least=11, drop=True),
    ]
    rows = [
        [w.workflow_id, w.step_id,
         f"signal {w.name}" if w.name else "sub-workflow" if w.child else "a time",
         when(w.until or ""), when(w.since)]
        for w in waits
    ]  # fmt: skip
    table = fitted(columns, rows, width)
    if any(w.child for w in waits):
        table.caption = "a sub-workflow's id is <workflow>.<step>"
    return table


def limits_table(uses: list[BudgetUse], width: int) -> RenderableType:
    """``baton limits``: one row per limit and key, then the first steps waiting below
    each, one a line."""
    columns = [
        Column("limit", whole=True),
        Column("key", whole=True),
        Column("rate", whole=True),
        Column("at once", whole=True),
        Column("running", whole=True),
        Column("waiting", whole=True),
        Column("next in", whole=True),
    ]
    rows = [
        [u.name + (" *" if u.overridden else ""), u.key or "–", u.rate or "–",
         str(u.concurrency or "–"), str(u.running), str(u.waiting),
         f"{u.next_free_in:.2f}s" if u.next_free_in else "now"]
        for u in uses
    ]  # fmt: skip
    lines: list[RenderableType] = [fitted(columns, rows, width)]
    for u in uses:
        if u.waiters:
            more = f" (+{u.waiting - len(u.waiters)} more)" if u.waiting > len(u.waiters) else ""
            lines.append(f"first waiting under {u.name} {u.key or '–'}{more}:")
            for waiter in u.waiters:  # "<workflow_id>:<step_id>:<run>"
                wid, step, run = waiter.rsplit(":", 2)
                lines.append(f"  {wid} {step} (run {run})")
    if any(u.overridden for u in uses):
        lines.append("* set at run time (baton limits set); `baton limits reset NAME` undoes it")
    return Group(*lines)


def agents_table(rows: list[dict[str, Any]], width: int) -> Table:
    """``baton agents``: one row per agent, its queue and task types."""
    columns = [
        Column("agent", whole=True),
        Column("queue", whole=True),
        Column("task types", least=20),
        Column("description", least=12, drop=True),
    ]
    cells = [[r["agent_id"], r["queue"], ", ".join(r["task_types"]), r["description"]]
             for r in rows]  # fmt: skip
    return fitted(columns, cells, width)


def status_table(r: WorkflowStatusReport) -> Table:
    """``baton status``: one row per known field, then links, maps, and the steps held by
    a limit as a count per limit (however many they are)."""
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
    held: dict[str, Counter[str]] = {}
    for t in r.throttled_steps:
        held.setdefault(t.limit, Counter())[t.why] += 1
    for limit, whys in sorted(held.items()):
        n = sum(whys.values())
        why = " and ".join(f"{k} {w}" if len(whys) > 1 else w for w, k in sorted(whys.items()))
        table.add_row("throttled", f"{n} step{'s' * (n > 1)} wait for {limit} ({why} limit)")
    if r.parent:
        table.add_row("parent", f"{r.parent} (its step {r.parent_step})")
    if r.children:
        table.add_row("sub-workflows", ", ".join(r.children))
    for m in r.maps:
        total = "?" if m.total is None else f"{m.total:,}"
        table.add_row("map", f"{m.step}: {m.done:,} done, {m.failed:,} failed of {total} items")
    return table
