"""Stored values decoded: a workflow's meta hash, a step's view of its state, results in
step order (an output kept under its output_key put back), and the items alive at a
version (live ones written by then, archived ones not yet superseded)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from orchestration.errors import WorkflowNotFound
from orchestration.model import CompensationOutcome, TaskResult, TaskStatus, WorkflowStatus
from orchestration.state.connection import text
from orchestration.state.fields import MetaField, VersionItem


@dataclass(frozen=True)
class StepState:
    """What a step sees when it begins: the workflow's status and its state so far."""

    status: str
    shared_data: dict[str, Any]
    results: dict[str, TaskResult]
    attempt: int = 0


@dataclass(frozen=True)
class Meta:
    """The workflow's meta hash, decoded once for every view that shows it."""

    fields: dict[str, str]

    @classmethod
    def decode(cls, workflow_id: str, raw: dict[bytes, bytes]) -> Meta:
        if not raw:
            raise WorkflowNotFound(workflow_id)
        return cls({text(k): text(v) for k, v in raw.items()})

    @property
    def status(self) -> WorkflowStatus:
        return WorkflowStatus(self.fields[MetaField.STATUS])

    @property
    def compensation(self) -> CompensationOutcome | None:
        raw = self.fields.get(MetaField.COMPENSATION)
        return CompensationOutcome.model_validate_json(raw) if raw else None

    def number(self, name: str, default: int = 0) -> int:
        return int(self.fields.get(name, default))

    def get(self, name: str) -> str | None:
        return self.fields.get(name)


def step_sort_key(step_id: str) -> tuple[int, ...]:
    """``step_2`` < ``step_2.h1`` < ``step_3.1`` < ``step_3.10``: the order steps run in."""
    parts = re.split(r"\.h|[.#\[\]]", step_id.removeprefix("step_"))  # (a map's batch: #)
    return tuple(int(p) for p in parts if p.isdigit())


def decode_data(raw: dict[bytes, bytes]) -> dict[str, Any]:
    return {text(key): json.loads(v) for key, v in raw.items()}


def decode_results(raw: dict[bytes, bytes], data: dict[str, Any]) -> dict[str, TaskResult]:
    """Results in step order; an output kept under its output_key is put back from ``data``."""
    out = {}
    for key, value in raw.items():
        r = TaskResult.model_validate_json(value)
        if r.output_key and r.status == TaskStatus.COMPLETED and r.output_key in data:
            r = r.model_copy(update={"result": data[r.output_key]})
        out[text(key)] = r
    return dict(sorted(out.items(), key=lambda kv: step_sort_key(kv[0])))


def at_version(
    versions: dict[str, int],
    archive: dict[bytes, bytes],
    version: int,
    data: dict[bytes, bytes],
    results: dict[bytes, bytes],
) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """Live items written at or before ``version``, plus archived items alive at it."""
    at_data = {
        k: v for k, v in data.items() if versions.get(VersionItem.DATA.of(text(k)), 0) <= version
    }
    at_results = {
        k: v
        for k, v in results.items()
        if versions.get(VersionItem.RESULT.of(text(k)), 0) <= version
    }
    for raw_field, value in archive.items():
        item, _, span = text(raw_field).rpartition("@")
        written, removed = (int(x) for x in span.split("-"))
        if written <= version < removed:
            kind, name = item[0], item[2:].encode()
            (at_data if kind == VersionItem.DATA else at_results)[name] = value
    return at_data, at_results
