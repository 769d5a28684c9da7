"""The agent contract: what a task function is given, what it returns, how it is declared.

A task function receives a frozen :class:`StepInput` (its validated parameters, the
shared data it may read, and the results before it) and returns its output (or a
:class:`Handoff`). It never touches Redis or Celery: the worker loads state, calls it,
validates the output and commits it, so an agent is testable as a pure function and safe
to run twice. Agents themselves, and the registry they join, are ``agents/registry.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from orchestration.errors import AgentOutputError, EmitTooLarge
from orchestration.model import TaskResult, dumps
from orchestration.model.limits import Limit
from orchestration.model.names import agent_queue

P = TypeVar("P", bound=BaseModel)


class NoParams(BaseModel):
    """Parameters of a task type that takes none; extra keys are refused."""

    model_config = ConfigDict(extra="forbid")


#: The largest value ``step.emit`` takes, as JSON (an LLM token batch, a partial result, a
#: log line: what a watcher shows as it arrives; results go in the step's output).
MAX_EMIT_BYTES = 16 * 1024


class EventSink(Protocol):
    """Where a running step's emits and progress go (``workers/events.py`` writes them to
    the workflow's event stream)."""

    def __call__(self, step_id: str, event: str, data_json: str) -> None: ...


@dataclass
class KeptEvents:
    """The sink of a step run outside a worker (an agent called as a function, in a
    test): it keeps what the step emitted, so that it can be looked at."""

    events: list[tuple[str, str, str]] = field(default_factory=list)

    def __call__(self, step_id: str, event: str, data_json: str) -> None:
        self.events.append((step_id, event, data_json))


class StepInput(BaseModel, Generic[P]):
    """Everything a task function may look at, loaded from the state store for one step."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    _sink: EventSink = PrivateAttr(default_factory=KeptEvents)

    workflow_id: str
    step_id: str
    agent_id: str
    task_type: str
    parameters: P
    shared_data: dict[str, Any] = Field(default_factory=dict)
    previous_results: list[TaskResult] = Field(default_factory=list)
    item: Any = None  # in a map: this run's item of the list (read from the state store)
    index: int | None = None  # ... and its position in the list

    def require(self, key: str) -> Any:
        """The shared_data value under ``key``, or a clear error naming the missing key."""
        if key not in self.shared_data:
            have = ", ".join(sorted(self.shared_data)) or "nothing"
            raise KeyError(f"shared_data has no {key!r} (it holds: {have})")
        return self.shared_data[key]

    def emit(self, data: Any) -> None:
        """Stream a small JSON value to whoever watches the workflow, while the step runs.

        Watchers (``orchestrator.stream``, ``baton watch``, the dashboard) get it in order
        with the step's other events; a slow watcher never slows the step. Over
        ``MAX_EMIT_BYTES`` or not JSON: ``EmitTooLarge``.
        """
        self._send("emitted", data)

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Report how far the step has got (``done`` of ``total``), with an optional line."""
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (done, total or 0)):
            raise EmitTooLarge(f"progress needs finite numbers, not {done!r} of {total!r}")
        self._send("progress", {"done": done, "total": total, "message": str(message)})

    def _send(self, event: str, data: Any) -> None:
        try:
            encoded = dumps(data)
        except (TypeError, ValueError) as exc:
            raise EmitTooLarge(f"step.emit takes JSON values: {exc}") from exc
        if len(encoded) > MAX_EMIT_BYTES:
            raise EmitTooLarge(
                f"step.emit got {len(encoded):,} bytes of JSON, over the cap of "
                f"{MAX_EMIT_BYTES:,}: emit smaller pieces, or return it as the output"
            )
        self._sink(self.step_id, event, encoded)

    @property
    def emitted(self) -> list[tuple[str, str, str]]:
        """What the step emitted, when it ran outside a worker: (step, event, JSON)."""
        return self._sink.events if isinstance(self._sink, KeptEvents) else []


TaskFn = Callable[[StepInput[Any]], Any | Awaitable[Any]]
Reads = Sequence[str] | Callable[[Any], Iterable[str]]


class Handoff(BaseModel):
    """Returned by a task function to hand the work on: the engine inserts this step next.

    ``output`` is the returning step's own output (validated and committed as usual); the
    new step runs on ``agent_id``'s queue with the state as it is after that commit.
    """

    model_config = ConfigDict(frozen=True)

    agent_id: str
    task_type: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    output_key: str | None = None
    output: Any = None


class WaitFor(BaseModel):
    """Returned by a top-level task function to wait for a signal next (an approval, a
    correction): the engine inserts a ``wait_for`` step after it, as for a ``Handoff``.
    ``output`` is the returning step's own output."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    name: str
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    timeout: float | None = None
    on_timeout: Any = "fail"  # "fail", "continue" or {"default": <output>}
    output_key: str | None = None
    output: Any = None

    def __init__(self, name: str | None = None, /, **data: Any) -> None:
        super().__init__(**({"name": name} if name is not None else {}), **data)

    def as_handoff(self) -> Handoff:
        params = {"name": self.name, "payload_schema": self.schema_, "on_timeout": self.on_timeout}
        if self.timeout is not None:
            params["timeout"] = self.timeout
        return Handoff(
            agent_id="baton",
            task_type="wait",
            parameters=params,
            output_key=self.output_key,
            output=self.output,
        )


@dataclass(frozen=True)
class StepOutput:
    """A task function's validated output, that output as JSON (what is committed), and
    the handoff it asked for, if any."""

    output: Any
    encoded: str
    handoff: Handoff | None = None


@dataclass(frozen=True)
class TaskType:
    """One task type of an agent, as registered; its Celery name is ``<agent>.<task>``."""

    agent_id: str
    name: str
    fn: TaskFn
    params: type[BaseModel] = NoParams
    output: type[BaseModel] | None = None
    description: str = ""
    reads: Reads = ()
    compensation: str | None = None
    limits: tuple[Limit, ...] = ()

    @property
    def is_async(self) -> bool:
        """An ``async def`` task: a worker awaits it on its event loop (``--pool asyncio``
        runs hundreds at once in one process)."""
        return inspect.iscoroutinefunction(self.fn)

    @property
    def celery_name(self) -> str:
        return f"{self.agent_id}.{self.name}"

    @property
    def queue(self) -> str:
        return agent_queue(self.agent_id)

    def validate_params(self, raw: dict[str, Any]) -> BaseModel:
        return self.params.model_validate(raw)

    def input_for(
        self,
        workflow_id: str,
        step_id: str,
        parameters: dict[str, Any],
        shared_data: dict[str, Any],
        previous_results: list[TaskResult],
        sink: EventSink | None = None,
        *,
        item: Any = None,
        index: int | None = None,
    ) -> StepInput[Any]:
        """The step's input, its parameters validated against this task type's model."""
        step = StepInput[Any](
            workflow_id=workflow_id,
            step_id=step_id,
            agent_id=self.agent_id,
            task_type=self.name,
            parameters=self.validate_params(parameters),
            shared_data=shared_data,
            previous_results=previous_results,
            item=item,
            index=index,
        )
        if sink is not None:
            step._sink = sink
        return step

    def reads_for(self, params: BaseModel) -> list[str]:
        """The shared_data keys this task reads, given its parameters."""
        return list(self.reads(params) if callable(self.reads) else self.reads)

    def run(self, step: StepInput[Any]) -> StepOutput:
        """Call the task function and return its output as JSON-ready data (an async one
        on a loop of its own: workers await it with ``arun`` on theirs).

        Output is checked against the declared model *before* anyone commits it,
        so an invalid result fails its own step instead of the next one.
        """
        if self.is_async:
            return asyncio.run(self.arun(step))
        return self.finish(self.fn(step))

    async def arun(self, step: StepInput[Any]) -> StepOutput:
        """Await an async task function; its output as ``run`` gives it."""
        out = self.fn(step)
        return self.finish(await out if inspect.isawaitable(out) else out)

    def finish(self, out: Any) -> StepOutput:
        """A task function's return value, checked and encoded for the commit."""
        handoff = None
        if isinstance(out, WaitFor):
            out = out.as_handoff()
        if isinstance(out, Handoff):
            handoff, out = out, out.output
        out = self.validate_output(out)
        try:
            encoded = dumps(out)
        except (TypeError, ValueError) as exc:  # this step fails, not its commit
            raise AgentOutputError(
                f"{self.celery_name} returned output that is not JSON: {exc}"
            ) from exc
        return StepOutput(out, encoded, handoff)

    def validate_output(self, out: Any) -> Any:
        if isinstance(out, BaseModel):
            out = out.model_dump(mode="json")
        if self.output is not None:
            try:
                out = self.output.model_validate(out).model_dump(mode="json")
            except ValidationError as exc:
                raise AgentOutputError(
                    f"{self.celery_name} returned output that does not match "
                    f"{self.output.__name__}: {exc}"
                ) from exc
        return out
