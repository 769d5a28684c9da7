"""The failover tests' agent and its ledger: a record, outside Redis, of every run of the
agent and of how each task message ended, written by the worker processes themselves.

``ledger.digest`` does real work (a key derivation over its inputs, a few milliseconds)
and returns a token unique to its run. Each run appends ``{"run": ...}`` with the Celery
task id; Celery's ``task_postrun`` appends ``{"end": ...}`` with that id, its state and
what it returned. A step's commit was acknowledged exactly when its task ended
``SUCCESS`` with a return value starting ``completed``: ``StepRun`` returns that only
after its commit script ran and enough replicas acknowledged it. Lines are single
``write`` calls on an ``O_APPEND`` file, so processes never interleave them. A process runs
one task at a time, so a run and its message's end are paired by task id and process.
Both kinds carry ``t`` (epoch seconds when written): an acknowledged end's ``t`` is just
after its commit was acknowledged, which is how ``bench/failover.py`` times a failover
(kill to the first commit on the new primary) and tells which fault caused a re-run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from typing import Any

from celery import current_task
from celery.signals import task_postrun
from pydantic import BaseModel, ConfigDict

from agents import Agent, StepInput


class DigestParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    values: list[int]
    rounds: int = 4000


def _append(entry: dict[str, Any]) -> None:
    path = os.environ.get("BATON_TEST_LEDGER")
    if not path:
        return
    line = (json.dumps(entry) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


ledger = Agent("ledger", description="Digests its values; every run is in the ledger file.")


@ledger.task(params=DigestParams)
def digest(step: StepInput[DigestParams]) -> dict[str, Any]:
    data = json.dumps(step.parameters.values).encode()
    key = hashlib.pbkdf2_hmac("sha256", data, step.step_id.encode(), step.parameters.rounds)
    token = uuid.uuid4().hex
    request = current_task.request if current_task else None
    _append(
        {
            "run": token, "wf": step.workflow_id, "step": step.step_id,
            "task": getattr(request, "id", None), "pid": os.getpid(), "t": time.time(),
        }
    )  # fmt: skip
    return {"token": token, "digest": key.hex(), "total": sum(step.parameters.values)}


@task_postrun.connect(weak=False)  # type: ignore[untyped-decorator]
def _ended(task_id: str, state: str | None = None, retval: Any = None, **_: Any) -> None:
    _append({"end": task_id, "pid": os.getpid(), "state": state, "retval": str(retval)[:80],
             "t": time.time()})  # fmt: skip
