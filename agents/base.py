"""The agent contract: what a task function is given, what it returns, how it is declared.

A task function receives a frozen :class:`StepInput` (its validated parameters, the
shared data it may read, and the results before it) and returns its output (or a
:class:`Handoff`). It never touches Redis or Celery: the worker loads state, calls it,
validates the output and commits it, so an agent is testable as a pure function and safe
to run twice. Agents themselves, and the registry they join, are ``agents/registry.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestration.broker import agent_queue
from orchestration.errors import AgentOutputError
from orchestration.models import TaskResult, dumps

P = TypeVar("P", bound=BaseModel)


class NoParams(BaseModel):
    """Parameters of a task type that takes none; extra keys are refused."""

    model_config = ConfigDict(extra="forbid")


class StepInput(BaseModel, Generic[P]):
    """Everything a task function may look at, loaded from the state store for one step."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    workflow_id: str
    step_id: str
    agent_id: str
    task_type: str
    parameters: P
    shared_data: dict[str, Any] = Field(default_factory=dict)
    previous_results: list[TaskResult] = Field(default_factory=list)

    def require(self, key: str) -> Any:
        """The shared_data value under ``key``, or a clear error naming the missing key."""
        if key not in self.shared_data:
            have = ", ".join(sorted(self.shared_data)) or "nothing"
            raise KeyError(f"shared_data has no {key!r} (it holds: {have})")
        return self.shared_data[key]


TaskFn = Callable[[StepInput[Any]], Any]
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
    ) -> StepInput[Any]:
        """The step's input, its parameters validated against this task type's model."""
        return StepInput(
            workflow_id=workflow_id,
            step_id=step_id,
            agent_id=self.agent_id,
            task_type=self.name,
            parameters=self.validate_params(parameters),
            shared_data=shared_data,
            previous_results=previous_results,
        )

    def reads_for(self, params: BaseModel) -> list[str]:
        """The shared_data keys this task reads, given its parameters."""
        return list(self.reads(params) if callable(self.reads) else self.reads)

    def run(self, step: StepInput[Any]) -> StepOutput:
        """Call the task function and return its output as JSON-ready data.

        Output is checked against the declared model *before* anyone commits it,
        so an invalid result fails its own step instead of the next one.
        """
        out = self.fn(step)
        handoff = None
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
