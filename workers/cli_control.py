"""``baton`` commands that control a workflow: cancel, pause, resume, retry; rollback to
one of its checkpoints, and list them."""

from __future__ import annotations

import click

from workers.cli_common import orchestrator, show
from workers.render_tables import checkpoints_table


def _control(action: str, workflow_id: str) -> None:
    with orchestrator() as orch:
        workflow_id = orch.resolve_id(workflow_id)
        getattr(orch, f"{action}_workflow")(workflow_id)
        status = orch.get_workflow_status(workflow_id)
    click.echo(f"{workflow_id}: {status.status.value} ({status.progress})")


def _command(action: str, help: str) -> click.Command:
    @click.command(name=action, help=help)
    @click.argument("workflow_id")
    def command(workflow_id: str) -> None:
        _control(action, workflow_id)

    return command


cancel = _command(
    "cancel", "Cancel a workflow: queued tasks are revoked, a running step will not commit."
)
pause = _command("pause", "Pause a running workflow before its next step.")
resume = _command("resume", "Resume a paused workflow from where it stopped.")
retry = _command("retry", "Retry a failed workflow from its last good checkpoint.")


@click.command()
@click.argument("workflow_id")
@click.argument("version", type=int)
def rollback(workflow_id: str, version: int) -> None:
    """Restore checkpoint VERSION of a stopped workflow (it is then paused)."""
    with orchestrator() as orch:
        workflow_id = orch.resolve_id(workflow_id)
        orch.rollback(workflow_id, version)
        status = orch.get_workflow_status(workflow_id)
    click.echo(
        f"{workflow_id}: {status.status.value} ({status.progress}), version {status.version}"
    )


@click.command()
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True)
def checkpoints(workflow_id: str, as_json: bool) -> None:
    """List a workflow's checkpoints: every committed version of its state."""
    with orchestrator() as orch:
        points = orch.get_checkpoints(orch.resolve_id(workflow_id))
    show(points, as_json, checkpoints_table)


COMMANDS = (cancel, pause, resume, retry, rollback, checkpoints)
