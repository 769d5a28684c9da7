"""A commit as one typed request: a step's result and everything that changes with it.

Every kind of commit (a step, a group's or a map's aggregate, a wait woken by a signal or
its timer, a branch's choice, a sub-workflow's end, a run-time handoff) is one
:class:`CommitRequest`, written by ``commit.lua`` in one compare-and-set script. What it
sends with it is the flow room's business (``flow/dispatch.py``, ``Dispatcher.commit``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestration.definition.plan import PlannedTask
from orchestration.model import HistoryEntry, TaskResult, TaskStatus, dumps
from orchestration.model.names import Event
from orchestration.state.scripts import CommitSpec, Join, Outcome, SignalSpec


class CommitRequest(BaseModel):
    """One commit of ``result`` as step ``node`` of run ``run``.

    ``outcome``: ``continue``, ``complete`` (the workflow's last step) or ``fail`` (the
    workflow fails: it is left compensating). ``advance``: a top-level node ends here, so
    the workflow's current step moves on. ``task_id``/``owner``: the message and the
    execution committing (a replayed commit of the same owner is reported as done).
    ``join``: this ends a branch of that group (filled in from what follows, by the
    dispatcher). The rest belong to one kind of commit each: ``handoff`` and
    ``max_handoffs`` (a run-time handoff), ``signal`` (a parked wait woken), ``consume``
    (a wait committing a kept signal), ``add_steps`` and ``skipped`` (a branch's choice:
    the steps on its way, less itself, and those on the ways not taken), ``outputs`` (a
    sub-workflow's outputs, a shared_data key each)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workflow_id: str
    result: TaskResult
    node: str
    run: int
    outcome: Outcome
    advance: bool = False
    output_json: str = "null"
    task_id: str = ""
    owner: str = ""
    join: Join | None = None
    handoff: PlannedTask | None = None
    max_handoffs: int = 0
    signal: SignalSpec | None = None
    consume: str = ""
    add_steps: int = 0
    skipped: tuple[TaskResult, ...] = ()
    outputs: dict[str, Any] = Field(default_factory=dict)

    def history_entry(self) -> HistoryEntry:
        """The history entry the commit writes (the script adds its version)."""
        result, signal = self.result, self.signal
        return HistoryEntry(
            event=Event.STEP_COMPLETED if result.status == TaskStatus.COMPLETED
            else Event.STEP_FAILED,
            step=result.step_id,
            agent_id=result.agent_id,
            task_type=result.task_type,
            status=result.status.value,
            execution_time=result.execution_time,
            error=result.error,
            attempt=result.metadata.get("attempt"),
            **({"signal": signal.name, "by": signal.by or None} if signal else {}),
        )  # fmt: skip

    def script_args(self) -> tuple[CommitSpec, str, str, str, str]:
        """``commit.lua``'s spec and its ARGV after it: the output, the result and the
        history entry as JSON, and the handoff's planned step (or '')."""
        result, entry = self.result, self.history_entry()
        spec = CommitSpec(
            step=result.step_id, node=self.node, output_key=result.output_key or "",
            advance=self.advance, outcome=self.outcome, error=result.error or "", run=self.run,
            task_id=self.task_id, owner=self.owner, join=self.join, agent_id=result.agent_id,
            task_type=result.task_type, status=result.status.value,
            seconds=result.execution_time, now=entry.timestamp,
            handoff_id=self.handoff.step_id if self.handoff else "",
            max_handoffs=self.max_handoffs, signal=self.signal, consume=self.consume,
            add_steps=self.add_steps,
            skipped={r.step_id: r.model_dump_json() for r in self.skipped},
            outputs={k: dumps(v) for k, v in self.outputs.items()},
        )  # fmt: skip
        return (
            spec,
            self.output_json,
            stored(result),
            entry.model_dump_json(exclude_none=True),
            self.handoff.model_dump_json() if self.handoff else "",
        )


def stored(result: TaskResult) -> str:
    """The TaskResult as stored: an output already under its output_key is not kept twice."""
    if result.output_key and result.status == TaskStatus.COMPLETED:
        return result.model_copy(update={"result": None}).model_dump_json()
    return result.model_dump_json()
