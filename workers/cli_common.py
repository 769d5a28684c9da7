"""What the ``baton`` command's groups share: the orchestrator they open, JSON output,
and the checks of arguments that click's own types do not make (each refusal is one line,
exit 2, through ``main``)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import click
from rich.console import RenderableType

from workers.render import console

# A stream event id as Redis gives it: milliseconds, optionally a dash and a sequence.
STREAM_ID = re.compile(r"\d+(-\d+)?")


def orchestrator(local_workers: bool | None = False) -> Any:
    from orchestration.client import WorkflowOrchestrator

    return WorkflowOrchestrator(local_workers=local_workers)


def echo_json(values: list[Any]) -> None:
    """Print models (or dicts) as one indented JSON list."""
    dumped = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in values]
    click.echo(json.dumps(dumped, indent=2, ensure_ascii=False))


def show(values: list[Any], as_json: bool, table: Callable[[Any, int], RenderableType]) -> None:
    """``values`` as JSON (``--json``), or as the table made of them, as wide as the
    terminal (``COLUMNS``; 80 when it is no terminal)."""
    if as_json:
        echo_json(values)
    else:
        console.print(table(values, console.width))


def not_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An option that, given, must say something (``--id ""`` is refused, not ignored)."""
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty", ctx=ctx, param=param)
    return value


def stream_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not STREAM_ID.fullmatch(value):
        raise click.BadParameter(
            f"{value!r} is not an event id (like 1796664393406-0: `baton watch --json` "
            "prints each event's id)",
            ctx=ctx,
            param=param,
        )
    return value
