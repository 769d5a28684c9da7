"""The ``baton`` command: its group, and ``main``, which turns expected failures into one
line. The subcommands live by what they are about:

- ``cli_workflows.py``: run, register, status, watch, list
- ``cli_control.py``: cancel, pause, resume, retry, rollback, checkpoints
- ``cli_waits.py``: signal, waiting, limits (set, reset)
- ``cli_ops.py``: worker, agents, flower, demo, dashboard, doctor (``doctor.py``)

and, with ``render.py`` and ``render_tables.py``, all that Baton prints. Before any command,
the settings are checked and the agent modules imported, so that a malformed URL or an
agent module that fails to import is one line whatever the command. Expected failures
print one plain line on stderr and exit with a documented code (``workers/failures.py``);
``--debug`` (or ``BATON_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import click

from orchestration.errors import AgentModuleError, BatonError
from orchestration.settings import get_settings
from workers import cli_control, cli_ops, cli_waits, cli_workflows
from workers.failures import FAILED, check_urls, failure_of


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
    settings = get_settings()  # malformed settings: one line, before any command
    check_urls(settings)
    load_agent_modules(settings.agent_modules)


def load_agent_modules(modules: list[str]) -> None:
    """Import the agent modules first, one by one, so that one which fails to import
    (a missing dependency, a syntax error, an exception of its own) is named with its
    error, whatever the command."""
    from agents.registry import load_agents

    load_agents()  # the built-in agents: failing there is a bug, with its traceback
    for name in modules:
        try:
            load_agents([name])
        except BatonError:
            raise  # (not importable at all, or an agent registered twice: said already)
        except Exception as exc:
            raise AgentModuleError(
                f"agent module {name!r} fails to import: {type(exc).__name__}: {exc}"
            ) from exc


for _group in (cli_workflows, cli_control, cli_waits, cli_ops):
    for _command in _group.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    debug = "--debug" in sys.argv[1:] or os.environ.get("BATON_DEBUG", "") not in ("", "0")
    try:
        code = cli.main(prog_name="baton", standalone_mode=False)
    except click.ClickException as exc:  # usage errors: click's message, one line, exit 2
        ctx = getattr(exc, "ctx", None)
        hint = f" (hint: `{ctx.command_path} --help`)" if ctx is not None else ""
        click.echo(f"baton: {' '.join(exc.format_message().split())}{hint}", err=True)
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
