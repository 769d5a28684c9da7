"""``baton`` commands about workflows: run, register, status, watch, list."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from orchestration.errors import CommandRefused, DefinitionError, WorkflowTimeout
from orchestration.model import WorkflowStatus
from orchestration.model.names import Event
from orchestration.model.waits import SUBFLOW_TASK, child_id
from orchestration.settings import get_settings
from workers.cli_common import not_empty, orchestrator, show, stream_id
from workers.failures import FAILED
from workers.render import console, event_line, outcome_lines, render_progress, warn_unserved
from workers.render_tables import status_table, workflows_table


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait/--no-wait", default=False, help="Follow progress until done.")
@click.option(
    "--id", "workflow_id", default=None, callback=not_empty, help="Client-supplied workflow id."
)
@click.option(
    "--timeout", type=float, default=None, help="Give up waiting after this many seconds."
)
def run(file: Path, wait: bool, workflow_id: str | None, timeout: float | None) -> None:
    """Create and start the workflow defined in FILE (YAML or JSON)."""
    embedded = get_settings().redis_url is None
    with orchestrator(local_workers=embedded) as orch:
        wid = orch.run_workflow(file, workflow_id)
        click.echo(wid)
        if not (wait or embedded):
            return
        try:
            [report] = render_progress(orch, [wid], timeout)
        except WorkflowTimeout as exc:
            unserved = warn_unserved(orch, wid)
            raise WorkflowTimeout(f"{exc}; {unserved}" if unserved else str(exc)) from exc
        if report.status != WorkflowStatus.COMPLETED:
            click.echo(f"baton: workflow {wid} {report.status.value}: {report.error}", err=True)
            sys.exit(FAILED)
        for line in outcome_lines(orch.get_context(wid)):
            console.print(line)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Replace another definition of that name.")
def register(file: Path, replace: bool) -> None:
    """Register the workflow in FILE by its name, for sub-workflow steps to call
    ({"workflow": "<name>"}); prints the name. Another definition already registered
    under that name is kept, and FILE refused, unless --replace."""
    from orchestration.state.definitions import TAKEN

    with orchestrator() as orch:
        try:
            name = orch.register_workflow(file, replace=replace)
        except DefinitionError as exc:
            taken = [what for where, what in exc.problems if what.startswith(TAKEN)]
            if not taken:
                raise
            raise CommandRefused(
                taken[0],
                f"`baton register {file} --replace` replaces it (workflows created "
                "already keep theirs)",
            ) from None
    click.echo(name)


@click.command()
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
def status(workflow_id: str, as_json: bool) -> None:
    """Show a workflow's status and progress."""
    with orchestrator() as orch:
        r = orch.get_workflow_status(orch.resolve_id(workflow_id))
    if as_json:
        click.echo(r.model_dump_json(indent=2))
        return
    console.print(status_table(r))


@click.command()
@click.argument("workflow_id")
@click.option("--since", default=None, callback=stream_id, help="Only events after this event id.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
def watch(workflow_id: str, since: str | None, as_json: bool, timeout: float | None) -> None:
    """Print a workflow's events as they happen (steps, what they emit, their progress)
    until it ends; exit 0 if it completed, 1 if not."""
    deadline = None if timeout is None else time.monotonic() + timeout
    children: dict[str, str] = {}  # the sub-workflow of each step parked on one
    with orchestrator() as orch:
        wid = orch.resolve_id(workflow_id)
        for event in orch.stream(wid, since=since, timeout=timeout):
            if event.event == Event.WAIT_PARKED and event.step:
                if orch.store.task(wid, event.step).task_type == SUBFLOW_TASK:
                    children[event.step] = child_id(wid, event.step)
            elif event.event == Event.COMMITTED and event.step:
                children.pop(event.step, None)
            click.echo(event.model_dump_json() if as_json else event_line(event, children))
            if deadline is not None and time.monotonic() > deadline and not event.ends:
                # (the stream's own timeout counts only silence: this bounds the whole watch)
                status = orch.store.status_of(wid).value
                raise WorkflowTimeout(f"workflow {wid} still {status} after {timeout}s")
        status = orch.store.status_of(wid)
    if status != WorkflowStatus.COMPLETED:
        sys.exit(FAILED)


@click.command(name="list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the statuses as JSON.")
def list_(limit: int, as_json: bool) -> None:
    """List recent workflows."""
    with orchestrator() as orch:
        reports = orch.list_workflows(limit)
    show(reports, as_json, workflows_table)


COMMANDS = (run, register, status, watch, list_)
