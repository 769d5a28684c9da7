"""``baton`` commands about what workflows wait for: signals to wait steps, the waits
parked now, and rate/concurrency limits (shown, set and reset at run time)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from orchestration.errors import CommandRefused
from orchestration.settings import get_settings
from workers.cli_common import not_empty, orchestrator, show
from workers.render_tables import limits_table, waiting_table


@click.command()
@click.argument("workflow_id")
@click.argument("name")
@click.option("--data", default="null", help="The payload: JSON, or @file.json.")
@click.option(
    "--id", "signal_id", default=None, callback=not_empty, help="Idempotency key: applied once."
)
@click.option("--by", default=None, help="Who sends it (recorded in the history).")
def signal(workflow_id: str, name: str, data: str, signal_id: str | None, by: str | None) -> None:
    """Send signal NAME (an approval, a correction) to a workflow's wait step."""
    from orchestration.errors import SignalError

    try:
        text = payload_file(name, Path(data[1:])) if data.startswith("@") else data
        payload = json.loads(text)
    except (OSError, ValueError) as exc:
        raise SignalError(f"--data is not JSON (or @file.json): {exc}") from None
    with orchestrator() as orch:
        wid = orch.resolve_id(workflow_id)
        outcome = orch.signal(wid, name, payload, signal_id, by=by or os.environ.get("USER"))
    click.echo(f"{wid}: signal {name} {outcome}")


def payload_file(name: str, path: Path) -> bytes:
    """The file's bytes, refused unread if over ``BATON_MAX_INPUT_BYTES`` (its size first;
    a pipe, whose size says nothing, is read no further than the cap)."""
    cap = get_settings().max_input_bytes
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        text = f.read(cap + 1) if size <= cap else b""
    if size > cap or len(text) > cap:
        what = f"{size:,} bytes, over" if size > cap else "over"
        raise CommandRefused(
            f"signal {name!r} refused: {path} is {what} BATON_MAX_INPUT_BYTES ({cap:,} bytes)",
            "send less, or raise BATON_MAX_INPUT_BYTES (for the clients and workers alike)",
        )
    return text


@click.command()
@click.option("--json", "as_json", is_flag=True)
def waiting(as_json: bool) -> None:
    """What each waiting workflow waits for, since when, until when."""
    with orchestrator() as orch:
        waits = orch.waiting()
    show(waits, as_json, waiting_table)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def limits(ctx: click.Context, as_json: bool) -> None:
    """Show each rate/concurrency limit: its values, steps running and waiting per key."""
    if ctx.invoked_subcommand is not None:
        return
    with orchestrator() as orch:
        uses = orch.limits()
    show(uses, as_json, limits_table)


@limits.command(name="set")
@click.argument("name")
@click.option("--rate", default=None, help="N/s, N/m or N/h; 'none' lifts it.")
@click.option("--concurrency", type=int, default=None, help="Steps at once; 0 lifts it.")
def limits_set(name: str, rate: str | None, concurrency: int | None) -> None:
    """Change limit NAME (an agent id, or agent.task) for every worker, at once."""
    if rate is None and concurrency is None:
        raise click.UsageError("give --rate and/or --concurrency")
    with orchestrator() as orch:
        values = orch.set_limit(name, rate=rate, concurrency=concurrency)
    click.echo(f"{name}: rate {values.rate or 'none'}, concurrency {values.concurrency or 'none'}")


@limits.command(name="reset")
@click.argument("name")
def limits_reset(name: str) -> None:
    """Back to the values the agent declares."""
    with orchestrator() as orch:
        changed = orch.reset_limit(name)
    click.echo(f"{name}: {'back to its declared values' if changed else 'was not changed'}")


COMMANDS = (signal, waiting, limits)
