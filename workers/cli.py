"""The ``baton`` command: its subcommands, and (with ``render.py``) all that Baton prints.

Expected failures print one plain line on stderr and exit with a documented code
(``workers/failures.py``); ``--debug`` (or ``BATON_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from orchestration.errors import BatonError, WorkflowTimeout
from orchestration.model import WorkflowStatus
from orchestration.settings import get_settings, redact
from workers.failures import FAILED, failure_of
from workers.render import (
    console,
    event_line,
    keep_whole,
    limits_table,
    outcome_lines,
    render_progress,
    waiting_table,
    warn_unserved,
)


def _orchestrator(local_workers: bool | None = False) -> Any:
    from orchestration.client import WorkflowOrchestrator

    return WorkflowOrchestrator(local_workers=local_workers)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
@click.option(
    "--debug", is_flag=True, envvar="BATON_DEBUG", help="Show the traceback of a failure."
)
def cli(verbose: bool, debug: bool) -> None:
    """Baton: multi-agent workflows on Celery workers, handoff state in Redis."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@cli.command()
@click.option(
    "--agents",
    default="",
    envvar="BATON_WORKER_AGENTS",
    help="Comma-separated agent ids (default: all).",
)
@click.option(
    "--concurrency",
    "-c",
    type=int,
    default=None,
    envvar="BATON_WORKER_CONCURRENCY",
    help="Worker processes (default: CPUs); with --pool asyncio, steps at once.",
)
@click.option("--autoscale", default=None, help="MAX,MIN processes, as in Celery.")
@click.option(
    "--hostname",
    "-n",
    default=None,
    envvar="BATON_WORKER_HOSTNAME",
    help="Node name (default: <agents>.<pid>@<host>).",
)
@click.option(
    "--pool",
    "-P",
    default="prefork",
    show_default=True,
    envvar="BATON_WORKER_POOL",
    help="prefork for CPU-bound agents; asyncio for async ones (hundreds per process).",
)
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option(
    "--no-control",
    is_flag=True,
    envvar="BATON_WORKER_NO_CONTROL",
    help="Do not consume baton.control (aggregates, dispatches).",
)
def worker(
    agents: str,
    concurrency: int | None,
    autoscale: str | None,
    hostname: str | None,
    pool: str,
    loglevel: str,
    no_control: bool,
) -> None:
    """Consume the queues of the given agents (one queue per agent: agent.<id>)."""
    from workers.aio import check_pool
    from workers.app import default_app
    from workers.routing import queues_for

    app = default_app()
    from agents.registry import registry

    ids = [a.strip() for a in agents.split(",") if a.strip()] or None
    queues = queues_for(registry, ids, control=not no_control)
    check_pool(pool, [registry.get_agent(a) for a in ids] if ids else list(registry), autoscale)
    label = "-".join(ids) if ids else "all"
    name = hostname or f"{label}.{os.getpid()}@%h"
    argv = ["worker", "-Q", ",".join(queues), "-n", name, "-P", pool, "-l", loglevel, "-E"]
    if autoscale:
        argv += ["--autoscale", autoscale]
    elif concurrency:
        argv += ["-c", str(concurrency)]
    shown = name.replace("%h", socket.gethostname())
    click.echo(
        f"baton worker {shown}: queues {','.join(queues)}; concurrency "
        f"{autoscale or concurrency or os.cpu_count()} ({pool} pool); "
        f"broker {redact(str(app.conf.broker_url))}",
        err=True,
    )
    app.worker_main(argv)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait/--no-wait", default=False, help="Follow progress until done.")
@click.option("--id", "workflow_id", default=None, help="Client-supplied workflow id.")
@click.option(
    "--timeout", type=float, default=None, help="Give up waiting after this many seconds."
)
def run(file: Path, wait: bool, workflow_id: str | None, timeout: float | None) -> None:
    """Create and start the workflow defined in FILE (YAML or JSON)."""
    embedded = get_settings().redis_url is None
    with _orchestrator(local_workers=embedded) as orch:
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


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def register(file: Path) -> None:
    """Register the workflow in FILE by its name, for sub-workflow steps to call
    ({"workflow": "<name>"}); prints the name."""
    with _orchestrator() as orch:
        click.echo(orch.register_workflow(file))


@cli.command()
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
def status(workflow_id: str, as_json: bool) -> None:
    """Show a workflow's status and progress."""
    with _orchestrator() as orch:
        r = orch.get_workflow_status(orch.resolve_id(workflow_id))
    if as_json:
        click.echo(r.model_dump_json(indent=2))
        return
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
    console.print(table)


@cli.command()
@click.argument("workflow_id")
@click.option("--since", default=None, help="Only events after this event id.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
def watch(workflow_id: str, since: str | None, as_json: bool, timeout: float | None) -> None:
    """Print a workflow's events as they happen (steps, what they emit, their progress)
    until it ends; exit 0 if it completed, 1 if not."""
    with _orchestrator() as orch:
        wid = orch.resolve_id(workflow_id)
        for event in orch.stream(wid, since=since, timeout=timeout):
            click.echo(event.model_dump_json() if as_json else event_line(event))
        status = orch.store.status_of(wid)
    if status != WorkflowStatus.COMPLETED:
        sys.exit(FAILED)


@cli.command()
@click.argument("workflow_id")
@click.argument("name")
@click.option("--data", default="null", help="The payload: JSON, or @file.json.")
@click.option("--id", "signal_id", default=None, help="Idempotency key: applied once.")
@click.option("--by", default=None, help="Who sends it (recorded in the history).")
def signal(workflow_id: str, name: str, data: str, signal_id: str | None, by: str | None) -> None:
    """Send signal NAME (an approval, a correction) to a workflow's wait step."""
    from orchestration.errors import SignalError

    try:
        text = Path(data[1:]).read_text() if data.startswith("@") else data
        payload = json.loads(text)
    except (OSError, ValueError) as exc:
        raise SignalError(f"--data is not JSON (or @file.json): {exc}") from None
    with _orchestrator() as orch:
        wid = orch.resolve_id(workflow_id)
        outcome = orch.signal(wid, name, payload, signal_id, by=by or os.environ.get("USER"))
    click.echo(f"{wid}: signal {name} {outcome}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def waiting(as_json: bool) -> None:
    """What each waiting workflow waits for, since when, until when."""
    with _orchestrator() as orch:
        waits = orch.waiting()
    if as_json:
        click.echo(json.dumps([w.model_dump() for w in waits], indent=2))
        return
    console.print(waiting_table(waits))


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def limits(ctx: click.Context, as_json: bool) -> None:
    """Show each rate/concurrency limit: its values, steps running and waiting per key."""
    if ctx.invoked_subcommand is not None:
        return
    with _orchestrator() as orch:
        uses = orch.limits()
    if as_json:
        click.echo(json.dumps([u.model_dump() for u in uses], indent=2))
        return
    console.print(limits_table(uses))


@limits.command(name="set")
@click.argument("name")
@click.option("--rate", default=None, help="N/s, N/m or N/h; 'none' lifts it.")
@click.option("--concurrency", type=int, default=None, help="Steps at once; 0 lifts it.")
def limits_set(name: str, rate: str | None, concurrency: int | None) -> None:
    """Change limit NAME (an agent id, or agent.task) for every worker, at once."""
    if rate is None and concurrency is None:
        raise click.UsageError("give --rate and/or --concurrency")
    with _orchestrator() as orch:
        values = orch.set_limit(name, rate=rate, concurrency=concurrency)
    click.echo(f"{name}: rate {values.rate or 'none'}, concurrency {values.concurrency or 'none'}")


@limits.command(name="reset")
@click.argument("name")
def limits_reset(name: str) -> None:
    """Back to the values the agent declares."""
    with _orchestrator() as orch:
        changed = orch.reset_limit(name)
    click.echo(f"{name}: {'back to its declared values' if changed else 'was not changed'}")


def _control(action: str, workflow_id: str) -> None:
    with _orchestrator() as orch:
        workflow_id = orch.resolve_id(workflow_id)
        getattr(orch, f"{action}_workflow")(workflow_id)
        status = orch.get_workflow_status(workflow_id)
    click.echo(f"{workflow_id}: {status.status.value} ({status.progress})")


@cli.command()
@click.argument("workflow_id")
def cancel(workflow_id: str) -> None:
    """Cancel a workflow: queued tasks are revoked, a running step will not commit."""
    _control("cancel", workflow_id)


@cli.command()
@click.argument("workflow_id")
def pause(workflow_id: str) -> None:
    """Pause a running workflow before its next step."""
    _control("pause", workflow_id)


@cli.command()
@click.argument("workflow_id")
def resume(workflow_id: str) -> None:
    """Resume a paused workflow from where it stopped."""
    _control("resume", workflow_id)


@cli.command()
@click.argument("workflow_id")
def retry(workflow_id: str) -> None:
    """Retry a failed workflow from its last good checkpoint."""
    _control("retry", workflow_id)


@cli.command()
@click.argument("workflow_id")
@click.argument("version", type=int)
def rollback(workflow_id: str, version: int) -> None:
    """Restore checkpoint VERSION of a stopped workflow (it is then paused)."""
    with _orchestrator() as orch:
        workflow_id = orch.resolve_id(workflow_id)
        orch.rollback(workflow_id, version)
        status = orch.get_workflow_status(workflow_id)
    click.echo(
        f"{workflow_id}: {status.status.value} ({status.progress}), version {status.version}"
    )


@cli.command()
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True)
def checkpoints(workflow_id: str, as_json: bool) -> None:
    """List a workflow's checkpoints: every committed version of its state."""
    with _orchestrator() as orch:
        points = orch.get_checkpoints(orch.resolve_id(workflow_id))
    if as_json:
        click.echo(json.dumps([p.model_dump() for p in points], indent=2))
        return
    table = Table("version", "event", "step", "agent", "changed", "at")
    for column in table.columns[1:4]:
        column.no_wrap, column.overflow = True, "fold"
    for p in points:
        agent = f"{p.agent_id}.{p.task_type}" if p.agent_id else ""
        event = p.event if p.restored_to is None else f"{p.event} (to version {p.restored_to})"
        table.add_row(str(p.version), event, p.step or "", agent, ", ".join(p.changed), p.timestamp)
    console.print(table)


@cli.command(name="list")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the statuses as JSON.")
def list_(limit: int, as_json: bool) -> None:
    """List recent workflows."""
    with _orchestrator() as orch:
        reports = orch.list_workflows(limit)
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in reports], indent=2))
        return
    table = Table("workflow_id", "name", "status", "progress", "created_at")
    keep_whole(table, 0)
    table.columns[1].max_width = 24
    for r in reports:
        name = f"{r.name} (in {r.parent[:8]})" if r.parent else r.name
        table.add_row(r.workflow_id, name, r.status.value, r.progress, r.created_at[:19])
    console.print(table)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def agents(as_json: bool) -> None:
    """List registered agents, their task types and queues."""
    from agents.registry import load_agents

    reg = load_agents(get_settings().agent_modules)
    rows: list[dict[str, Any]] = [
        {
            "agent_id": a.agent_id,
            "queue": a.queue,
            "task_types": sorted(a.task_types),
            "description": a.description,
        }
        for a in reg
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("agent", "queue", "task types", "description")
    for column in table.columns[:2]:
        column.no_wrap, column.overflow = True, "fold"
    for row in rows:
        table.add_row(
            row["agent_id"], row["queue"], ", ".join(row["task_types"]), row["description"]
        )
    console.print(table)


def _guard_address(
    what: str, address: str, credentials: object, setting: str, insecure: bool
) -> None:
    """Refuse to serve ``what`` beyond this machine without credentials, unless told to."""
    if credentials or _loopback(address):
        return
    if not insecure:
        raise BatonError(
            f"refusing to serve {what} on {address} without credentials: anyone who reaches "
            f"the port would see every workflow. Set {setting}=user:password, listen on "
            "127.0.0.1, or pass --insecure"
        )
    click.echo(f"baton: warning: {what} on {address} has no credentials (--insecure)", err=True)


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@cli.command()
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback address without auth.")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port: int, address: str, insecure: bool, flower_args: tuple[str, ...]) -> None:
    """Start Flower against the configured broker.

    Its state persists in $BATON_HOME/flower.db. Basic auth comes from
    BATON_FLOWER_BASIC_AUTH (user:password[,user2:password2]), passed to Flower through
    its environment, never on the command line; extra arguments go to Flower as they are.
    Beyond 127.0.0.1 it needs those credentials (or --insecure).
    """
    settings = get_settings()
    _guard_address("Flower", address, settings.flower_basic_auth, "BATON_FLOWER_BASIC_AUTH",
                   insecure)  # fmt: skip
    from orchestration.client.embedded import resolve_redis_url

    settings.home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BATON_REDIS_URL": resolve_redis_url(settings)}
    if settings.flower_basic_auth:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    cmd = [
        sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}",
        f"--address={address}", "--persistent=True", f"--db={settings.home / 'flower.db'}",
        "--state_save_interval=60000", *flower_args,
    ]  # fmt: skip
    os.execve(sys.executable, cmd, env)  # Flower replaces this process: signals reach it


@cli.command()
@click.option("--timeout", type=float, default=300, show_default=True)
def demo(timeout: float) -> None:
    """Run the data-analysis pipeline and a parallel group on local workers, embedded Redis."""
    from workers.demo import Demo

    with Demo(get_settings(), console=console) as d:
        console.print(
            f"Baton demo: redis {d.redis_url}, "
            f"{len(d.workers.names)} worker processes ({', '.join(d.queues)})"
        )
        ids = d.start()
        reports = render_progress(d.orchestrator, ids, timeout)
        for r in reports:
            for line in outcome_lines(d.orchestrator.get_context(r.workflow_id)):
                console.print(line)
        if any(r.status != WorkflowStatus.COMPLETED for r in reports):
            sys.exit(1)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option(
    "--flower-url",
    default="http://localhost:5555",
    show_default=True,
    envvar="BATON_FLOWER_URL",
    help="Flower's base URL, for the links from each step to its tasks.",
)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback host without auth.")
def dashboard(host: str, port: int, flower_url: str, insecure: bool) -> None:
    """Serve the workflows dashboard (live steps, groups, checkpoints) and /metrics.

    With BATON_DASHBOARD_BASIC_AUTH=user:password every page, API and /metrics ask for
    it; beyond 127.0.0.1 the dashboard needs it (or --insecure)."""
    _guard_address("the dashboard", host, get_settings().dashboard_basic_auth,
                   "BATON_DASHBOARD_BASIC_AUTH", insecure)  # fmt: skip
    from workers.dashboard import serve

    click.echo(f"baton dashboard: http://{host}:{port}/ (metrics: /metrics)", err=True)
    serve(host, port, flower_url)


def main() -> None:
    debug = "--debug" in sys.argv[1:] or os.environ.get("BATON_DEBUG", "") not in ("", "0")
    try:
        code = cli.main(standalone_mode=False)
    except click.ClickException as exc:  # usage errors: click's own line, exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("baton: aborted", err=True)
        sys.exit(FAILED)
    except Exception as exc:
        failure = failure_of(exc)
        if failure is None:
            raise
        if debug:
            traceback.print_exc()
        click.echo(failure.line(), err=True)
        sys.exit(failure.code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
