"""The ``baton`` command: its group, and ``main``, which turns expected failures into one
line. The subcommands live by what they are about:

- ``cli_workflows.py``: run, register, status, watch, list
- ``cli_control.py``: cancel, pause, resume, retry, rollback, checkpoints
- ``cli_waits.py``: signal, waiting, limits (set, reset)
- ``cli_ops.py``: worker, agents, flower, demo, dashboard

and (with ``render.py``) all that Baton prints. Expected failures print one plain line
on stderr and exit with a documented code (``workers/failures.py``); ``--debug`` (or
``BATON_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import click

from workers import cli_control, cli_ops, cli_waits, cli_workflows
from workers.failures import FAILED, failure_of


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


for _group in (cli_workflows, cli_control, cli_waits, cli_ops):
    for _command in _group.COMMANDS:
        cli.add_command(_command)


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
