"""A workflow definition as users write it: the original design's step dicts, checked
for shape (what refers to what is checked in ``orchestration.definition``)."""

from __future__ import annotations

from datetime import datetime
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

from orchestration.model.bounds import Duration, within_max_ahead
from orchestration.model.records import IDENT

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
    retry_backoff: Annotated[Duration, Field(gt=0)] = 1.0
    retry_backoff_max: Annotated[Duration, Field(gt=0)] = 300.0
    timeout: Annotated[Duration, Field(gt=0)] | None = Field(
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
    timeout: Annotated[Duration, Field(gt=0)] | None = None
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

    sleep: Annotated[Duration, Field(ge=0)] | None = None
    sleep_until: datetime | None = None
    output_key: Annotated[str, Field(min_length=1)] | None = None
    description: str = ""

    @field_validator("sleep_until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("give a time zone (e.g. 2026-12-24T09:00:00Z)")
        return v if v is None else within_max_ahead(v)


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
    retry_backoff: Annotated[Duration, Field(gt=0)] = 1.0
    retry_backoff_max: Annotated[Duration, Field(gt=0)] = 300.0
    timeout: Annotated[Duration, Field(gt=0)] | None = None

    def as_task(self) -> TaskStep:
        return TaskStep.model_validate(self.model_dump(exclude={"over"}))


class MapStep(_Strict):
    """``{"map": {"over": "segments.items", "agent_id": ..., "task_type": ...}, ...}``: run
    the task once per item of a list that an earlier step produced, however long it is.

    ``over`` is ``<output_key>.<path>``; each item reaches its task as ``step.item`` (and
    ``step.index``), read from the state store. ``aggregate``: ``collect`` (the items'
    outputs as a list, in input order; a failed item's is null), or a group's aggregator
    (``summary``, ``merge``). ``batch_size`` items go in one task message (25 unless
    given: a 10,000-item map is 400 messages, a 100-item one still 4 batches side by side;
    an async task's batch runs its items at once, a plain one's in turn);
    ``max_concurrency`` caps the items in flight across every worker."""

    map: MapMember
    output_key: Annotated[str, Field(min_length=1)] | None = None
    aggregate: str = "collect"
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 25
    max_concurrency: Annotated[int, Field(ge=1)] | None = None
    description: str = ""
    on_failure: Literal["continue", "fail"] = "continue"
    min_success_rate: Annotated[float, Field(ge=0, le=1)] | None = None


Case = Annotated[list[Member], Field(min_length=1)]


class BranchOn(_Strict):
    on: Annotated[str, Field(min_length=1)]
    cases: Annotated[dict[str, Case], Field(min_length=1)]
    default: list[Member] | None = None  # [] as none: a value no case names runs nothing

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
