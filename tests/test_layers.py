"""The layers hold: imports point toward the core, the core's rooms import only the rooms
below them (docs/architecture.md), no two modules import each other, and the public
surface stays what the README documents.

Read from the source (every import, lazy ones included), so a shortcut taken inside a
function shows here as well as one at the top of a module.
"""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pydantic

import agents
import orchestration
import orchestration.errors
import orchestration.model.steps

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestration", "agents", "workers")
# What each package may import from the others (a layer sees only the ones below it).
ALLOWED = {"orchestration": set(), "agents": {"orchestration"}, "workers": set(PACKAGES)}
# The top layer living in orchestration/ (users import the client from there): it may
# reach the agents layer, through client.agents.load_catalog only.
SEAM = {"orchestration.client.agents": {"agents"}}
# The core's rooms, bottom first: a module imports only from its own room and those below
# (errors and settings are the floor; the package's __init__, the public API, the roof).
RANK = {"errors": 0, "settings": 0, "model": 1, "definition": 2, "state": 3, "flow": 4, "client": 5}
# What the agents layer may see of the core.
AGENTS_SEE = {"orchestration.errors", "orchestration.settings", "orchestration.model"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every project module and the project modules it imports."""
    files = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                found.update([base, *(f"{base}.{a.name}" for a in node.names)])
        targets = set()
        for imported in found:
            while imported and imported not in files:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _imports().items()
        for target in targets
        if (top := target.split(".")[0]) != module.split(".")[0]
        and top not in ALLOWED[module.split(".")[0]] | SEAM.get(module, set())
    ]
    assert wrong == []


def _room(module: str) -> str:
    """The room of a core module (``orchestration.state.store`` -> ``state``); the package
    itself (the public API) sits above every room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "api"


def test_the_core_rooms_import_only_the_rooms_below_them() -> None:
    rank = {**RANK, "api": len(RANK)}
    graph = _imports()
    modules = [m for m in graph if m.startswith("orchestration")]
    assert {_room(m) for m in modules} == set(rank), "a module outside the rooms"
    wrong = [
        f"{module} ({_room(module)}) imports {target} ({_room(target)})"
        for module in modules
        for target in graph[module]
        if target.startswith("orchestration") and rank[_room(target)] > rank[_room(module)]
    ]
    assert wrong == []


def test_agents_see_only_the_pure_data_room_errors_and_settings() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _imports().items()
        if module.startswith("agents")
        for target in targets
        if target.startswith("orchestration")
        and not any(target == s or target.startswith(s + ".") for s in AGENTS_SEE)
    ]
    assert wrong == []


def test_the_pure_data_and_definition_rooms_reach_neither_redis_nor_celery() -> None:
    wrong = []
    for path in [
        *(ROOT / "orchestration" / "model").rglob("*.py"),
        *(ROOT / "orchestration" / "definition").rglob("*.py"),
    ]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            wrong += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] in {"redis", "celery", "kombu"}
            ]
    assert wrong == []


def test_no_two_modules_import_each_other() -> None:
    graph = _imports()
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt], done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], done)
    assert cycles == []


def test_the_public_surface_is_the_documented_one() -> None:
    assert set(orchestration.__all__) == {
        "AmbiguousWorkflowId", "BatonError", "BranchOn", "BranchStep", "BudgetUse",
        "Checkpoint", "CompensationOutcome", "DefinitionError", "HistoryEntry",
        "InputTooLarge", "LimitError", "LimitValues", "MapMember", "MapProgress", "MapStep",
        "NotReplicated", "ParallelStep", "RunningStep", "SignalError", "SignalTooLarge",
        "SleepStep", "StateStoreError", "StepError", "StreamEvent", "SubflowStep", "TaskResult",
        "TaskStatus", "TaskStep", "ThrottledStep", "UnknownAgent", "UnknownTaskType",
        "WaitStep", "WaitingStep", "WhenStep", "WhenTest", "WorkflowContext",
        "WorkflowDefinition", "WorkflowNotFound", "WorkflowOrchestrator",
        "WorkflowStateError", "WorkflowStatus", "WorkflowStatusReport", "WorkflowTimeout",
    }  # fmt: skip
    assert set(agents.__all__) == {
        "MAX_EMIT_BYTES",
        "Agent",
        "AgentRegistry",
        "EmitTooLarge",
        "Handoff",
        "LimitError",
        "NoParams",
        "StepError",
        "StepInput",
        "TaskType",
        "WaitFor",
        "load_agents",
        "registry",
    }
    for package in (orchestration, agents):
        assert all(hasattr(package, name) for name in package.__all__)


def _project_types(annotation: object) -> set[type]:
    """The project's classes named in a type annotation (inside list[...], | None, ...)."""
    if isinstance(annotation, type):
        return {annotation} if annotation.__module__.startswith("orchestration") else set()
    return {t for arg in typing.get_args(annotation) for t in _project_types(arg)}


def test_every_type_the_client_returns_or_raises_is_exported() -> None:
    exported = {getattr(orchestration, name) for name in orchestration.__all__}
    client = orchestration.WorkflowOrchestrator
    returned = {
        t
        for name, method in inspect.getmembers(client, inspect.isfunction)
        if not name.startswith("_")
        for t in _project_types(typing.get_type_hints(method).get("return"))
    }
    raised = {
        getattr(orchestration.errors, node.exc.func.id)
        for path in (ROOT / "orchestration" / "client").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
        and isinstance(node.exc.func, ast.Name) and hasattr(orchestration.errors, node.exc.func.id)
    }  # fmt: skip
    assert returned and raised
    assert sorted(t.__name__ for t in (returned | raised) - exported) == []


def test_every_definition_step_model_is_exported_and_internal_errors_are_not() -> None:
    models = {
        name for name, value in vars(orchestration.model.steps).items()
        if isinstance(value, type) and issubclass(value, pydantic.BaseModel)
        and value.__module__ == "orchestration.model.steps" and not name.startswith("_")
    }  # fmt: skip
    assert models and models <= set(orchestration.__all__)
    assert "StepFailed" not in orchestration.__all__
