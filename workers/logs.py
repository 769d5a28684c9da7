"""Logging for workers: every line carries the workflow, step and agent it is about.

``BATON_LOG_FORMAT=json`` makes each line one JSON object (for log shippers); the
default stays Celery's text format, with ``[workflow step agent]`` added to task lines.
The context is set around each task by Celery's ``task_prerun``/``task_postrun`` signals,
so Celery's own lines about a task carry it as well as Baton's.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from typing import Any

from celery.signals import after_setup_logger, after_setup_task_logger, task_postrun, task_prerun

FIELDS = ("workflow_id", "step", "agent")
TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(baton)s%(name)s: %(message)s"
_context: ContextVar[dict[str, str] | None] = ContextVar("baton_log_context", default=None)
_format = "text"
_configured = False


class ContextFilter(logging.Filter):
    """Puts the current task's workflow, step and agent on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _context.get() or {}
        for name in FIELDS:
            setattr(record, name, ctx.get(name, ""))
        # For the text format: "[<workflow> <step> <agent>] " on lines about a step.
        record.baton = (
            f"[{ctx.get('workflow_id')} {ctx.get('step')} {ctx.get('agent')}] " if ctx else ""
        )
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({name: getattr(record, name, "") or None for name in FIELDS})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def install(logger: logging.Logger) -> None:
    """Add the context filter (and, in JSON mode, the JSON formatter) to a logger's handlers."""
    for handler in logger.handlers:
        handler.addFilter(ContextFilter())
        # The formats use the filter's fields, so they are set only where it is installed.
        handler.setFormatter(
            JsonFormatter() if _format == "json" else logging.Formatter(TEXT_FORMAT)
        )


def configure(log_format: str) -> None:
    """Called once per worker process, before Celery sets its logging up."""
    global _format, _configured
    _format = log_format
    if _configured:
        return
    _configured = True
    after_setup_logger.connect(lambda logger, **_: install(logger), weak=False)
    after_setup_task_logger.connect(lambda logger, **_: install(logger), weak=False)
    task_prerun.connect(_enter, weak=False)
    task_postrun.connect(_leave, weak=False)


def _enter(task: Any = None, args: Any = None, **_: Any) -> None:
    name = getattr(task, "name", "") or ""
    ctx = {"agent": name.split(".", 1)[0]}
    if args and len(args) >= 2:
        ctx.update(workflow_id=str(args[0]), step=str(args[1]))
    _context.set(ctx)


def _leave(**_: Any) -> None:
    _context.set(None)
