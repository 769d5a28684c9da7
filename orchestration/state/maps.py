"""A map's state in Redis: its items, each item's result, its counts and its line of batches.

A map's list is read once, when the map starts, and its items are written to the
workflow's maps hash (``keys.WorkflowKeys.maps``), a field per batch; a batch's message carries no
item and no batch number: it takes the next batch in line when it starts
(``lua/mapbegin.lua``), reads those items by reference, and commits each item's result
on its own (``lua/mapcommit.lua``). Messages stay the same size however long the list;
memory grows with it, linearly.

Everything of one map lives under ``<step>@<epoch>:``; a restore that takes the map back
to before it began bumps the epoch, and it starts over.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from orchestration.definition.plan import PlannedMap
from orchestration.errors import MapInputError
from orchestration.model import RunningStep, dumps
from orchestration.state.fields import MapField, batch_step
from orchestration.state.scripts import (
    MapBeginReply,
    MapBeginSpec,
    MapCommitReply,
    MapCommitSpec,
    MapStartReply,
    MapStartSpec,
    Outgoing,
)
from orchestration.state.store import StateStore

CHUNK = 1000  # items written, or results read, per round trip


@dataclass(frozen=True)
class ItemResult:
    """One item's outcome, as kept in the maps hash. Compact, for there may be 100,000: a
    completed item is ``+<seconds> <its output's JSON>``, kept as the task encoded it, so a
    map that collects its outputs joins them without parsing one; a failed item is
    ``-<JSON of its error, seconds and attempts>``."""

    ok: bool
    output_json: str = "null"
    error: str | None = None
    seconds: float = 0.0
    attempt: int = 1

    @property
    def output(self) -> Any:
        return json.loads(self.output_json) if self.ok else None

    def encode(self) -> str:
        if self.ok:
            return f"+{self.seconds:.6f} {self.output_json}"
        return "-" + dumps({"e": self.error, "t": round(self.seconds, 6), "a": self.attempt})

    @classmethod
    def decode(cls, raw: bytes | str) -> ItemResult:
        text = raw.decode() if isinstance(raw, bytes) else raw
        if text.startswith("+"):
            seconds, _, output = text[1:].partition(" ")
            return cls(True, output, seconds=float(seconds))
        d = json.loads(text[1:])
        return cls(False, error=d.get("e"), seconds=d.get("t", 0.0), attempt=d.get("a", 1))

    @staticmethod
    def completed(raw: bytes | None) -> bool:
        """Whether a stored result is a completed item's (read without parsing it)."""
        return raw is not None and raw[:1] == b"+"


def batches(n: int, size: int) -> int:
    return math.ceil(n / size)


def walk(value: Any, path: Sequence[str], where: str) -> list[Any]:
    """The list at ``path`` in ``value``, or a ``MapInputError`` saying what is there."""
    for i, part in enumerate(path):
        at = ".".join([where, *path[:i]])
        if isinstance(value, dict):
            if part not in value:
                has = ", ".join(sorted(map(str, value))[:10]) or "nothing"
                raise MapInputError(f"{at} has no {part!r} (it has: {has})")
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise MapInputError(f"{at} is {_kind(value)}, which has no {part!r}")
    if not isinstance(value, list):
        raise MapInputError(f"over {'.'.join([where, *path])} is {_kind(value)}, not a list")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object (keys: {', '.join(sorted(map(str, value))[:10]) or 'none'})"
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


class MapStore:
    """Reads and atomic writes of maps, beside the :class:`StateStore` they belong to."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.redis = store.redis

    def base(self, workflow_id: str, map_id: str) -> str:
        return self.store.map_base(workflow_id, map_id)

    def count(self, workflow_id: str, base: str) -> int | None:
        """How many items the map has (None: its list is not read yet)."""
        raw = self.redis.hget(self.store.keys(workflow_id).maps, MapField.COUNT.at(base))
        return None if raw is None else int(raw)

    def read_list(self, workflow_id: str, node: PlannedMap) -> list[Any]:
        raw = self.redis.hget(self.store.keys(workflow_id).data, node.over_key)
        if raw is None:
            raise MapInputError(f"shared_data has no {node.over_key!r} for over {node.over}")
        return walk(json.loads(raw), node.over_path, node.over_key)

    def put_items(self, workflow_id: str, base: str, items: list[Any], size: int) -> None:
        """Write the items, a JSON list per batch (the start script then records how many):
        a batch reads one field, and the list is encoded a batch at a time, not an item."""
        key = self.store.keys(workflow_id).maps
        pipe = self.redis.pipeline(transaction=False)
        for b, start in enumerate(range(0, len(items), size)):
            pipe.hset(key, MapField.ITEMS.at(base, b), dumps(items[start : start + size]))
            if len(pipe) >= 100:
                pipe.execute()
        pipe.execute()

    def _results(self, workflow_id: str, base: str, n: int) -> Iterator[bytes | None]:
        key = self.store.keys(workflow_id).maps
        for start in range(0, n, CHUNK):
            fields = MapField.RESULT.each(base, range(start, min(n, start + CHUNK)))
            yield from self.redis.hmget(key, fields)

    def raw_results(self, workflow_id: str, base: str, n: int) -> list[bytes | None]:
        """Every item's result as stored (``ItemResult.encode``), in input order (None: it
        has none)."""
        return list(self._results(workflow_id, base, n))

    def todo(self, workflow_id: str, base: str, n: int, size: int) -> list[int]:
        """The batches a run of the map sends: every one, or (when items have results from
        an earlier run) those with an item that did not complete."""
        n_batches = batches(n, size)
        key = self.store.keys(workflow_id).maps
        if not self.redis.hexists(key, MapField.OK.at(base)) and not self.redis.hexists(
            key, MapField.FAILED.at(base)
        ):
            return list(range(n_batches))
        open_batches: set[int] = set()
        for k, raw in enumerate(self._results(workflow_id, base, n)):
            if not ItemResult.completed(raw):
                open_batches.add(k // size)
        return sorted(open_batches)

    def start(
        self,
        workflow_id: str,
        node: PlannedMap,
        base: str,
        run: int,
        n: int,
        todo: list[int],
        window: int,
        send: Outgoing,
        *,
        task_id: str = "",
        reset: bool = False,
    ) -> MapStartReply:
        spec = MapStartSpec(
            map=node.step_id, base=base, run=run, n=n, todo=todo, window=window, reset=reset,
            task_id=task_id,
            per_message=_per_message(send),
        )  # fmt: skip
        raw = self.store.scripts.call("mapstart", self.store.keys(workflow_id), spec, send=send)
        return MapStartReply.decode(raw)

    def begin(
        self,
        workflow_id: str,
        node: PlannedMap,
        run: int,
        *,
        task_id: str,
        owner: str,
        running: RunningStep,
        lease_seconds: float,
        data_keys: list[str] | None,
        fields: list[str],
    ) -> MapBeginReply:
        spec = MapBeginSpec(
            map=node.step_id, run=run, task_id=task_id, owner=owner,
            worker=running.worker or "", lease_ms=int(lease_seconds * 1000),
            running_json=running.model_dump_json(), size=node.batch_size,
            data_keys=data_keys, fields=fields,
        )  # fmt: skip
        raw = self.store.scripts.call("mapbegin", self.store.keys(workflow_id), spec)
        return MapBeginReply.decode(raw)

    def commit(
        self,
        workflow_id: str,
        node: PlannedMap,
        base: str,
        run: int,
        n: int,
        batch: int,
        results: dict[int, ItemResult],
        *,
        earlier_failed: int,
        task_id: str,
        send: Outgoing,
    ) -> MapCommitReply:
        indices = sorted(results)
        spec = MapCommitSpec(
            map=node.step_id, base=base, run=run, batch=batch, step=batch_step(node.step_id, batch),
            task_id=task_id, indices=indices, ok=[results[k].ok for k in indices],
            earlier_failed=earlier_failed, seconds=[results[k].seconds for k in indices],
            agent_id=node.member.agent_id, task_type=node.member.task_type, n=n,
            per_message=_per_message(send),
        )  # fmt: skip
        raw = self.store.scripts.call(
            "mapcommit",
            self.store.keys(workflow_id),
            spec,
            *(results[k].encode() for k in indices),
            send=send,
        )
        return MapCommitReply.decode(raw)


def _per_message(send: Outgoing) -> int:
    return max(1, len(send.pushes) // len(send.ids)) if send.ids and send.pushes else 1
