"""``baton`` commands about workflows: run, register, status, watch, list."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestration.errors import WorkflowTimeout
from orchestration.model import WorkflowStatus
from orchestration.settings import get_settings
from workers.cli_common import orchestrator, show
from workers.failures import FAILED
from workers.render import (
    console,
    event_line,
    outcome_lines,
    render_progress,
    status_table,
    warn_unserved,
    workflows_table,
)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait/--no-wait", default=False, help="Follow progress until done.")
@click.option("--id", "workflow_id", default=None, help="Client-supplied workflow id.")
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
def register(file: Path) -> None:
    """Register the workflow in FILE by its name, for sub-workflow steps to call
    ({"workflow": "<name>"}); prints the name."""
    with orchestrator() as orch:
        click.echo(orch.register_workflow(file))


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
@click.option("--since", default=None, help="Only events after this event id.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
def watch(workflow_id: str, since: str | None, as_json: bool, timeout: float | None) -> None:
    """Print a workflow's events as they happen (steps, what they emit, their progress)
    until it ends; exit 0 if it completed, 1 if not."""
    with orchestrator() as orch:
        wid = orch.resolve_id(workflow_id)
        for event in orch.stream(wid, since=since, timeout=timeout):
            click.echo(event.model_dump_json() if as_json else event_line(event))
        status = orch.store.status_of(wid)
    if status != WorkflowStatus.COMPLETED:
        sys.exit(FAILED)


@click.command(name="list")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the statuses as JSON.")
def list_(limit: int, as_json: bool) -> None:
    """List recent workflows."""
    with orchestrator() as orch:
        reports = orch.list_workflows(limit)
    show(reports, as_json, workflows_table)


COMMANDS = (run, register, status, watch, list_)
