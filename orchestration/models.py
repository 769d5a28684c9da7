"""Pydantic records at every boundary: definitions in, results and state out.

Field and status names follow the original in-process design (``TaskResult``,
``WorkflowContext``, ``TaskStatus``, ``WorkflowStatus``) so its users feel at home.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

IDENT = r"^[A-Za-z_][A-Za-z0-9_\-]*$"
#: What a workflow id may be: the client refuses others, the dashboard answers 404.
WORKFLOW_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")


def utcnow() -> str:
    return datetime.now(UTC).isoformat()


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON, as the state store keeps values (NaN refused: JSON has none)."""
    return _ENCODER.encode(value)


class TaskStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    WAITING = "waiting"
    SKIPPED = "skipped"  # on a way of a branch not taken


class WorkflowStatus(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PAUSED = "paused"
    COMPENSATING = "compensating"  # failed; compensations of completed steps are running
    CANCELLED = "cancelled"
    WAITING = "waiting"  # nothing runs; a wait step waits for a signal or a time

    @property
    def is_terminal(self) -> bool:
        return self in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED)


# --------------------------------------------------------------------------- definitions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskStep(_Strict):
    """One agent task: the original design's step dict, unchanged."""

    agent_id: Annotated[str, Field(pattern=IDENT)]
    task_type: Annotated[str, Field(pattern=IDENT)]
    output_key: Annotated[str, Field(min_length=1)] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    context_keys: list[str] | None = Field(
        default=None, description="shared_data keys handed to the agent (default: all)"
    )
    retries: Annotated[int, Field(ge=0, le=100)] = 0
    retry_backoff: Annotated[float, Field(gt=0)] = 1.0
    retry_backoff_max: Annotated[float, Field(gt=0)] = 300.0
    timeout: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="soft time limit in seconds; the agent may catch it"
    )


class WaitStep(_Strict):
    """``{"wait_for": "approval", "schema": {...}, "timeout": 86400, "on_timeout": "fail"}``:
    wait for a signal of that name whose payload fits the JSON Schema; it becomes the
    step's output. ``on_timeout``: ``fail`` (through the saga), ``continue`` (output null)
    or ``{"default": value}`` (that value as the output)."""

    wait_for: Annotated[str, Field(pattern=IDENT)]
    output_key: Annotated[str, Field(min_length=1)] | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    timeout: Annotated[float, Field(gt=0)] | None = None
    on_timeout: Literal["fail", "continue"] | dict[str, Any] = "fail"
    description: str = ""

    @field_validator("on_timeout")
    @classmethod
    def _default_only(cls, v: Any) -> Any:
        if isinstance(v, dict) and set(v) != {"default"}:
            raise ValueError('give "fail", "continue" or {"default": <the output>}')
        return v


class SleepStep(_Strict):
    """``{"sleep": 30}`` or ``{"sleep_until": "2026-12-24T09:00:00Z"}``: a durable timer (no
    process sleeps; it survives restarts of everything)."""

    sleep: Annotated[float, Field(ge=0)] | None = None
    sleep_until: datetime | None = None
    output_key: Annotated[str, Field(min_length=1)] | None = None
    description: str = ""

    @field_validator("sleep_until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("give a time zone (e.g. 2026-12-24T09:00:00Z)")
        return v


class SubflowStep(_Strict):
    """``{"workflow": {definition} or "registered name", "inputs": {"child_key":
    "parent_key.path"}, "outputs": {"parent_key": "child_key"}}``: run a workflow as one
    step, as a child with its own id (``<parent id>.<step id>``), linked both ways."""

    workflow: dict[str, Any] | Annotated[str, Field(min_length=1)]
    inputs: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    outputs: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    output_key: Annotated[str, Field(min_length=1)] | None = None
    description: str = ""


def _as_task(value: Any) -> Any:
    """A ``wait_for``/``sleep``/``sleep_until`` step, written as the engine's own task step
    (``baton.wait``), so that everything that handles steps handles it; a ``workflow`` step
    likewise (``baton.workflow``)."""
    if not isinstance(value, dict):
        return value
    if "workflow" in value:
        try:
            sub = SubflowStep.model_validate(value)
        except ValidationError as exc:
            raise ValueError(
                "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            ) from None
        return {
            "agent_id": "baton",
            "task_type": "workflow",
            "output_key": sub.output_key,
            "parameters": {"workflow": sub.workflow, "inputs": sub.inputs, "outputs": sub.outputs},
            "description": sub.description,
        }
    if "wait_for" in value:
        kind: type[WaitStep] | type[SleepStep] = WaitStep
    elif "sleep" in value or "sleep_until" in value:
        kind = SleepStep
    else:
        return value
    try:
        w = kind.model_validate(value)
    except ValidationError as exc:
        raise ValueError(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None
    if isinstance(w, WaitStep):
        params: dict[str, Any] = {
            "name": w.wait_for,
            "payload_schema": w.schema_,
            "timeout": w.timeout,
            "on_timeout": w.on_timeout,
        }
    else:
        if (w.sleep is None) == (w.sleep_until is None):
            raise ValueError("give one of sleep (seconds) or sleep_until (a time)")
        params = {"sleep": w.sleep, "sleep_until": w.sleep_until and w.sleep_until.isoformat()}
    return {
        "agent_id": "baton",
        "task_type": "wait",
        "output_key": w.output_key,
        "parameters": {k: v for k, v in params.items() if v is not None},
        "description": w.description,
    }


Member = Annotated[TaskStep, BeforeValidator(_as_task)]
Branch = Member | Annotated[list[Member], Field(min_length=1)]


class ParallelStep(_Strict):
    """A parallel group: members (or member sequences) run as one chord."""

    parallel: Annotated[list[Branch], Field(min_length=1)]
    output_key: Annotated[str, Field(min_length=1)] | None = None
    aggregate: str = "summary"
    description: str = ""
    on_failure: Literal["continue", "fail"] = "continue"
    min_success_rate: Annotated[float, Field(ge=0, le=1)] | None = None


class MapMember(_Strict):
    """What a map runs for each item: an agent task, as a step names one (no output_key:
    the map's outputs are its members' results, aggregated)."""

    agent_id: Annotated[str, Field(pattern=IDENT)]
    task_type: Annotated[str, Field(pattern=IDENT)]
    over: Annotated[str, Field(min_length=1)]
    parameters: dict[str, Any] = Field(default_factory=dict)
    context_keys: list[str] | None = Field(
        default=None, description="shared_data keys handed to each item (default: all but over's)"
    )
    retries: Annotated[int, Field(ge=0, le=100)] = 0
    retry_backoff: Annotated[float, Field(gt=0)] = 1.0
    retry_backoff_max: Annotated[float, Field(gt=0)] = 300.0
    timeout: Annotated[float, Field(gt=0)] | None = None

    def as_task(self) -> TaskStep:
        return TaskStep.model_validate(self.model_dump(exclude={"over"}))


class MapStep(_Strict):
    """``{"map": {"over": "segments.items", "agent_id": ..., "task_type": ...}, ...}``: run
    the task once per item of a list that an earlier step produced, however long it is.

    ``over`` is ``<output_key>.<path>``; each item reaches its task as ``step.item`` (and
    ``step.index``), read from the state store. ``aggregate``: ``collect`` (the items'
    outputs as a list, in input order; a failed item's is null), or a group's aggregator
    (``summary``, ``merge``). ``batch_size`` items go in one task message;
    ``max_concurrency`` caps the items in flight across every worker."""

    map: MapMember
    output_key: Annotated[str, Field(min_length=1)] | None = None
    aggregate: str = "collect"
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 1
    max_concurrency: Annotated[int, Field(ge=1)] | None = None
    description: str = ""
    on_failure: Literal["continue", "fail"] = "continue"
    min_success_rate: Annotated[float, Field(ge=0, le=1)] | None = None


Case = Annotated[list[Member], Field(min_length=1)]


class BranchOn(_Strict):
    on: Annotated[str, Field(min_length=1)]
    cases: Annotated[dict[str, Case], Field(min_length=1)]
    default: Case | None = None

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare ``on:`` key as the boolean true.
        if isinstance(value, dict) and True in value and "on" not in value:
            value = {("on" if k is True else k): v for k, v in value.items()}
        return value


class BranchStep(_Strict):
    """``{"branch": {"on": "classification.tier", "cases": {"high": [steps], ...},
    "default": [steps]}}``: run the steps of the case the value at ``on`` names (a string,
    or the JSON of a number or boolean: ``"3"``, ``"true"``), else ``default``, else none.
    No code is evaluated: a path into an earlier output, and literals."""

    branch: BranchOn
    description: str = ""

    def paths(self) -> list[tuple[str, list[TaskStep]]]:
        """Each way through the branch: (where, its steps); none when nothing matches."""
        out = [(f"branch.cases.{k}", list(v)) for k, v in self.branch.cases.items()]
        return [*out, ("branch.default", list(self.branch.default or []))]


class WhenTest(_Strict):
    path: Annotated[str, Field(min_length=1)]
    equals: Any


class WhenStep(_Strict):
    """``{"when": {"path": "approval.approved", "equals": true}, "then": [steps],
    "else": [steps]}``: the boolean form of a branch (``equals`` any JSON literal)."""

    model_config = ConfigDict(populate_by_name=True)

    when: WhenTest
    then: Case
    else_: list[Member] = Field(default_factory=list, alias="else")
    description: str = ""

    def paths(self) -> list[tuple[str, list[TaskStep]]]:
        return [("then", list(self.then)), ("else", list(self.else_))]


def _step_kind(value: Any) -> str:
    # Choosing the model by shape gives one error naming the field actually wrong,
    # instead of one per union member.
    for kind, model, field in (
        (STEP_GROUP, ParallelStep, "parallel"),
        (STEP_MAP, MapStep, "map"),
        (STEP_BRANCH, BranchStep, "branch"),
        (STEP_WHEN, WhenStep, "when"),
    ):
        if isinstance(value, model) or (isinstance(value, dict) and field in value):
            return kind
    return STEP_TASK


STEP_TASK, STEP_GROUP, STEP_MAP = "task step", "parallel group", "map"
STEP_BRANCH, STEP_WHEN = "branch", "when"
Step = Annotated[
    Annotated[TaskStep, Tag(STEP_TASK)]
    | Annotated[ParallelStep, Tag(STEP_GROUP)]
    | Annotated[MapStep, Tag(STEP_MAP)]
    | Annotated[BranchStep, Tag(STEP_BRANCH)]
    | Annotated[WhenStep, Tag(STEP_WHEN)],
    Discriminator(_step_kind),
    BeforeValidator(_as_task),
]


class WorkflowDefinition(_Strict):
    name: Annotated[str, Field(min_length=1)] = "workflow"
    description: str = ""
    steps: Annotated[list[Step], Field(min_length=1)]
    max_handoffs: Annotated[int, Field(ge=0)] = 10
    deadline_seconds: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Fail the workflow if still running this long after start."
    )

    def output_keys(self) -> list[tuple[str, str, str | None]]:
        """(location, output_key, way) for every step that names one, in order; ``way``
        names the branch path a key is on (the same key may be made on two ways of one
        branch: only one of them runs)."""
        found: list[tuple[str, str, str | None]] = []
        for i, step in enumerate(self.steps):
            if isinstance(step, ParallelStep):
                for b, branch in enumerate(step.parallel):
                    members = branch if isinstance(branch, list) else [branch]
                    for k, member in enumerate(members):
                        if member.output_key:
                            loc = f"steps[{i}].parallel[{b}]" + (
                                f"[{k}]" if isinstance(branch, list) else ""
                            )
                            found.append((f"{loc}.output_key", member.output_key, None))
            elif isinstance(step, BranchStep | WhenStep):
                for way, steps in step.paths():
                    for k, member in enumerate(steps):
                        if member.output_key:
                            loc = f"steps[{i}].{way}[{k}].output_key"
                            found.append((loc, member.output_key, f"{i}:{way}"))
                continue
            if step.output_key:
                found.append((f"steps[{i}].output_key", step.output_key, None))
        return found


# --------------------------------------------------------------------------- results and state


class TaskResult(BaseModel):
    """What one agent task produced, committed to the state store as one record."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    agent_id: str
    status: TaskStatus
    result: Any = None
    error: str | None = None
    execution_time: float = 0.0
    metadata: dict[str, Any] = Field(default_factory=dict)
    step_id: str = ""
    task_type: str = ""
    output_key: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    worker: str | None = None


class HistoryEntry(BaseModel):
    """One line of a workflow's execution history."""

    model_config = ConfigDict(frozen=True, extra="allow")

    event: str
    step: str | None = None
    agent_id: str | None = None
    task_type: str | None = None
    status: str | None = None
    execution_time: float | None = None
    error: str | None = None
    version: int | None = None
    attempt: int | None = None
    changed: list[str] | None = None
    restored_to: int | None = None  # a restore's: the checkpoint it restored
    timestamp: str = Field(default_factory=utcnow)

    @field_validator("changed", mode="before")
    @classmethod
    def _empty_lua_table(cls, value: Any) -> Any:
        return [] if value == {} else value  # Lua's cjson writes an empty list as {}


class Checkpoint(BaseModel):
    """One version of a workflow's state: which step made it, when, and what it changed.

    ``changed`` names shared_data keys (``data:<key>``) and task results (``result:<step>``).
    """

    model_config = ConfigDict(frozen=True)

    version: int
    event: str
    step: str | None = None
    agent_id: str | None = None
    task_type: str | None = None
    changed: list[str] = Field(default_factory=list)
    restored_to: int | None = None  # a restore (rollback, retry, saga): the version it restored
    timestamp: str


class CompensationOutcome(BaseModel):
    """What the saga did after a failure: steps compensated (in order), their failures."""

    model_config = ConfigDict(frozen=True)

    compensated: list[str] = Field(default_factory=list)
    failures: dict[str, str] = Field(default_factory=dict)
    restored_to_version: int | None = None


class WorkflowContext(BaseModel):
    """A workflow's full handoff state as stored in Redis."""

    workflow_id: str
    name: str = ""
    created_at: str
    status: WorkflowStatus
    current_step: int
    total_steps: int
    shared_data: dict[str, Any] = Field(default_factory=dict)
    task_results: dict[str, TaskResult] = Field(default_factory=dict)
    execution_history: list[HistoryEntry] = Field(default_factory=list)
    version: int = 0
    error: str | None = None
    failed_step: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    run: int = 1
    compensation: CompensationOutcome | None = None


class RunningStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    step_id: str
    agent_id: str
    task_type: str
    started_at: str
    worker: str | None = None


class StreamEvent(BaseModel):
    """One event of a workflow's stream (``orchestrator.stream``), in the order it happened.

    ``event`` is ``step_started``, ``emitted`` (``data``: what ``step.emit`` gave),
    ``progress`` (``data``: done, total, message), ``committed`` (``result``: the step's
    status, ``error``), ``status`` (the workflow's new ``status``), or a history event
    (``step_retry``, ...). ``id`` is the stream id to resume from (``since=``).
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    event: str
    step: str | None = None
    data: Any = None
    status: str | None = None  # the workflow's status, when the event set it
    result: str | None = None
    error: str | None = None
    version: int | None = None

    @property
    def at(self) -> datetime:
        """When Redis recorded it (a stream id starts with its milliseconds)."""
        return datetime.fromtimestamp(int(self.id.split("-", 1)[0]) / 1000, UTC)

    @property
    def ends(self) -> bool:
        """The workflow ended here (completed, failed or cancelled)."""
        return self.status in ("completed", "failed", "cancelled")


class WaitingStep(BaseModel):
    """A wait parked in a workflow: the signal it waits for (None: a timer), or the
    sub-workflow (``child``), since when, and until when (its timeout or wake-up time)."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    step_id: str
    name: str | None
    since: str
    until: str | None = None
    child: str | None = None


class MapProgress(BaseModel):
    """How far a map has got: items done (completed), failed, and in all (None: its list
    is not read yet)."""

    model_config = ConfigDict(frozen=True)

    step: str
    done: int = 0
    failed: int = 0
    total: int | None = None


class ThrottledStep(BaseModel):
    """A step waiting for its turn under a rate or concurrency limit (it holds no worker)."""

    model_config = ConfigDict(frozen=True)

    step: str
    limit: str
    why: Literal["rate", "concurrency"]
    until: float  # epoch milliseconds of its next turn (or next look, for concurrency)


class WorkflowStatusReport(BaseModel):
    """``get_workflow_status``'s answer; indexable like the original design's dict."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    name: str
    status: WorkflowStatus
    progress: str
    completion_percentage: float
    task_results: int
    shared_data_keys: list[str]
    current_agent: str | None = None
    running_steps: list[RunningStep] = Field(default_factory=list)
    throttled_steps: list[ThrottledStep] = Field(default_factory=list)
    maps: list[MapProgress] = Field(default_factory=list)
    parent: str | None = None  # a sub-workflow's parent workflow (and ``parent_step``)
    parent_step: str | None = None
    children: list[str] = Field(default_factory=list)  # its sub-workflows' ids
    error: str | None = None
    failed_step: str | None = None
    created_at: str
    updated_at: str | None = None
    finished_at: str | None = None
    version: int = 0
    compensation: CompensationOutcome | None = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)
