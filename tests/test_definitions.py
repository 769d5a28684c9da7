"""Invalid definitions are refused before anything is written or enqueued."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestration import DefinitionError, WorkflowNotFound, WorkflowStatus
from orchestration.client import WorkflowOrchestrator

GOOD = {"agent_id": "testkit", "task_type": "echo", "output_key": "x", "parameters": {"value": 1}}


def with_steps(*steps: Any) -> dict[str, Any]:
    return {"name": "bad", "steps": list(steps)}


CASES = {
    "unknown agent": (
        with_steps({**GOOD, "agent_id": "nobody"}),
        "steps[0].agent_id",
        "unknown agent 'nobody'",
    ),
    "unknown task type": (
        with_steps({**GOOD, "task_type": "fly"}),
        "steps[0].task_type",
        "agent 'testkit' has no task type 'fly'",
    ),
    "empty steps": ({"name": "bad", "steps": []}, "steps", "at least 1 item"),
    "no steps": ({"name": "bad"}, "steps", "Field required"),
    "parameters not a mapping": (
        with_steps({**GOOD, "parameters": [1]}),
        "steps[0].parameters",
        "valid dictionary",
    ),
    "output_key wrong type": (
        with_steps({**GOOD, "output_key": 7}),
        "steps[0].output_key",
        "valid string",
    ),
    "unknown step field": (
        with_steps({**GOOD, "agentid": "x"}),
        "steps[0].agentid",
        "Extra inputs are not permitted",
    ),
    "duplicate output_key": (
        with_steps(GOOD, {**GOOD}),
        "steps[1].output_key",
        "duplicate output_key 'x' (first used at steps[0].output_key)",
    ),
    "duplicate output_key in a group": (
        with_steps(GOOD, {"parallel": [{**GOOD, "output_key": "y"}, {**GOOD, "output_key": "y"}]}),
        "steps[1].parallel[1].output_key",
        "duplicate output_key 'y'",
    ),
    "unknown aggregator": (
        with_steps({"parallel": [GOOD], "aggregate": "median"}),
        "steps[0].aggregate",
        "unknown aggregator 'median'",
    ),
    "empty group": (with_steps({"parallel": []}), "steps[0].parallel", "at least 1 item"),
    "bad parameter": (
        with_steps({**GOOD, "parameters": {"size": 3}}),
        "steps[0].parameters.size",
        "Extra inputs are not permitted",
    ),
    "bad member parameter": (
        with_steps(
            {
                "parallel": [
                    GOOD,
                    [
                        {
                            "agent_id": "testkit",
                            "task_type": "payload",
                            "parameters": {"size": "big"},
                        }
                    ],
                ]
            }
        ),
        "steps[0].parallel[1][0].parameters.size",
        "valid integer",
    ),
    # A field named like a kind of step keeps its place (the kind itself is left out).
    "bad map field": (
        with_steps(
            {"map": {"over": "x.value", "agent_id": "testkit", "task_type": "echo", "retries": -1}}
        ),
        "steps[0].map.retries",
        "greater than or equal to 0",
    ),
    "empty branch path": (
        with_steps({"branch": {"on": "", "cases": {"a": [GOOD]}}}),
        "steps[0].branch.on",
        "at least 1 character",
    ),
    "empty when path": (
        with_steps({"when": {"path": "", "equals": 1}, "then": [GOOD]}),
        "steps[0].when.path",
        "at least 1 character",
    ),
    "bad group member field": (
        with_steps({"parallel": [{**GOOD, "retries": -1}]}),
        "steps[0].parallel[0].retries",
        "greater than or equal to 0",
    ),
}


def snapshot(r: redis.Redis) -> dict[bytes, int]:
    """Every key with its type-appropriate length: a queued message would show. (The
    reapers' lock is left out: workers take and drop it on their own schedule.)"""
    keys = [key for key in r.scan_iter(count=1000) if not key.endswith(b":reaper")]
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    for key, kind in zip(keys, pipe.execute(), strict=True):
        length = {b"list": pipe.llen, b"hash": pipe.hlen}.get(kind)
        length(key) if length else pipe.echo(-1)
    return dict(zip(keys, pipe.execute(), strict=True))


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_definition_is_rejected_naming_the_field(
    case: str, orchestrator: WorkflowOrchestrator, raw_redis: redis.Redis
) -> None:
    definition, field, message = CASES[case]
    before = snapshot(raw_redis)

    with pytest.raises(DefinitionError) as err:
        orchestrator.run_workflow(definition)

    assert any(where == field and message in what for where, what in err.value.problems), err.value
    assert f"{field}: " in str(err.value)
    assert snapshot(raw_redis) == before


def test_definitions_load_from_yaml_and_json_files(
    orchestrator: WorkflowOrchestrator, tmp_path: Path
) -> None:
    as_json = tmp_path / "wf.json"
    as_json.write_text(json.dumps({"name": "from json", "steps": [GOOD]}))
    as_yaml = tmp_path / "wf.yaml"
    as_yaml.write_text("name: from yaml\nsteps:\n  - {agent_id: testkit, task_type: echo}\n")

    for path, name in ((as_json, "from json"), (as_yaml, "from yaml")):
        wid = orchestrator.create_workflow(path)
        status = orchestrator.get_workflow_status(wid)
        assert (status.name, status.status, status.progress) == (
            name,
            WorkflowStatus.CREATED,
            "0/1",
        )


def test_a_broken_file_names_the_file(orchestrator: WorkflowOrchestrator, tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("steps: [unclosed\n")
    with pytest.raises(DefinitionError, match="broken.yaml:2:1: not valid YAML: expected"):
        orchestrator.create_workflow(bad)


def test_unknown_workflow_ids_raise_workflow_not_found(orchestrator: WorkflowOrchestrator) -> None:
    for call in (
        orchestrator.get_workflow_status,
        orchestrator.get_context,
        orchestrator.start_workflow,
    ):
        with pytest.raises(WorkflowNotFound):
            call("no-such-workflow")
