"""Reading a definition: a dict, a YAML or JSON file, or a model in; a
:class:`WorkflowDefinition` out, or a :class:`DefinitionError` naming each offending field
(``steps[2].parameters.threshold``) or the file's line and column."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestration.errors import DefinitionError
from orchestration.model import (
    STEP_BRANCH,
    STEP_GROUP,
    STEP_MAP,
    STEP_TASK,
    STEP_WHEN,
    WorkflowDefinition,
)

DefinitionSource = WorkflowDefinition | dict[str, Any] | str | Path
Problems = list[tuple[str, str]]


#: The tags of the union a step is (one per kind of step): a location names the tag right
#: after the step's index, which says nothing to a user (``steps[1]``, not ``steps[1].map``).
#: A field of the same name further on (a map step's ``map``) is kept.
_STEP_TAGS = frozenset({STEP_TASK, STEP_GROUP, STEP_MAP, STEP_BRANCH, STEP_WHEN})
#: The names pydantic gives the members of a union it has no tag for: ``TaskStep``,
#: ``function-before[_as_task(), TaskStep]``, ``list[...]``.
_MEMBER_NAME = re.compile(r"^(TaskStep|[\w-]+\[.*\])$")


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    after_index = False
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
            after_index = True
            continue
        if not ((after_index and p in _STEP_TAGS) or _MEMBER_NAME.match(p)):
            out += f".{p}" if out else p
        after_index = False
    return out


def problems_of(exc: ValidationError, prefix: str = "") -> Problems:
    out = []
    for err in exc.errors():
        where = _loc(err["loc"])
        out.append((f"{prefix}.{where}" if prefix and where else prefix or where, err["msg"]))
    return out


def read_definition(source: DefinitionSource) -> WorkflowDefinition:
    """Parse a definition from a model, a dict, or a ``.yaml``/``.yml``/``.json`` file."""
    if isinstance(source, WorkflowDefinition):
        return source
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise DefinitionError([(str(path), f"cannot read: {exc.strerror}")]) from None
        try:
            raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except json.JSONDecodeError as exc:
            where = f"{path}:{exc.lineno}:{exc.colno}"
            raise DefinitionError([(where, f"not valid JSON: {exc.msg}")]) from None
        except yaml.YAMLError as exc:
            raise DefinitionError([_yaml_problem(path, exc)]) from None
        source = raw
    if not isinstance(source, dict):
        raise DefinitionError([("", f"a definition is a mapping, got {type(source).__name__}")])
    try:
        return WorkflowDefinition.model_validate(source)
    except ValidationError as exc:
        raise DefinitionError(problems_of(exc)) from None


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> tuple[str, str]:
    """``file:line:column`` and what is wrong there (PyYAML names ``<unicode string>``)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return where, f"not valid YAML: {problem}" + (f" ({context})" if context else "")
