"""``baton`` commands that run Baton's processes: a worker, the demo, Flower and the
dashboard; and the agents a worker can serve."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from typing import Any

import click
from pydantic import SecretStr

from orchestration.errors import BatonError
from orchestration.model import WorkflowStatus
from orchestration.settings import get_settings, redact
from workers.cli_common import show
from workers.doctor import doctor
from workers.render import console, outcome_lines, render_progress
from workers.render_tables import agents_table


@click.command()
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
    # (no mingle: see workers/consumer.py)
    argv = ["worker", "-Q", ",".join(queues), "-n", name, "-P", pool, "-l", loglevel, "-E"]
    argv += ["--without-mingle"]
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


@click.command()
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
    show(rows, as_json, agents_table)


def _guard_address(
    what: str, address: str, setting: str, credentials: SecretStr | None, insecure: bool
) -> None:
    """Refuse credentials not of the form user:password, and to serve ``what`` beyond this
    machine without credentials, unless told to."""
    from workers.dashboard.server import check_basic_auth

    check_basic_auth(setting, credentials.get_secret_value() if credentials else None,
                     several=what == "Flower")  # fmt: skip
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


@click.command()
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
    _guard_address("Flower", address, "BATON_FLOWER_BASIC_AUTH", settings.flower_basic_auth,
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


@click.command()
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


@click.command()
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
    _guard_address("the dashboard", host, "BATON_DASHBOARD_BASIC_AUTH",
                   get_settings().dashboard_basic_auth, insecure)  # fmt: skip
    from workers.dashboard import serve

    click.echo(f"baton dashboard: http://{host}:{port}/ (metrics: /metrics)", err=True)
    serve(host, port, flower_url)


COMMANDS = (worker, agents, flower, demo, dashboard, doctor)
