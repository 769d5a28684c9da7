"""Message-size log shared by both sides, so bytes per message are measured identically.

Every process (bench client, Baton workers, bare workers) imports this module. A
``after_task_publish`` handler appends one JSON line per published task message to a
per-process file under ``$BENCH_MSG_LOG`` -- but only while the flag file ``enabled``
exists there, so timing scenarios pay one ``stat`` per message and write nothing to Redis
(a Redis log would pollute the ``INFO commandstats`` counts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery.signals import after_task_publish

FLAG = "enabled"


def _log_dir() -> Path | None:
    raw = os.environ.get("BENCH_MSG_LOG")
    return Path(raw) if raw else None


def message_bytes(body: Any, headers: Any) -> int:
    """Bytes of one task message as serialized: the JSON body plus the JSON headers."""
    return len(json.dumps(body)) + len(json.dumps(headers or {}, default=str))


@after_task_publish.connect
def _record(body: Any = None, headers: Any = None, **_: Any) -> None:
    where = _log_dir()
    if where is None or not (where / FLAG).exists():
        return
    task = (headers or {}).get("task", "?")
    line = json.dumps({"task": task, "bytes": message_bytes(body, headers)})
    with open(where / f"msg-{os.getpid()}.jsonl", "a") as fh:
        fh.write(line + "\n")


def enable(where: Path, on: bool) -> None:
    """Start (or stop) logging in every process that shares ``where``; clears old logs."""
    where.mkdir(parents=True, exist_ok=True)
    flag = where / FLAG
    if on:
        for old in where.glob("msg-*.jsonl"):
            old.unlink()
        flag.touch()
    else:
        flag.unlink(missing_ok=True)


def collect(where: Path) -> list[dict[str, Any]]:
    """Every message logged since the last ``enable(where, True)``."""
    out: list[dict[str, Any]] = []
    for path in sorted(where.glob("msg-*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line]
    return out
