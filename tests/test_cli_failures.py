"""The ``baton`` command's failures: one plain line on stderr, a hint, a documented exit
code (2 refused, 3 Redis unreachable, 4 timed out), never a traceback; and workflow ids
taken by any unique prefix, as git takes commits."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import RedisServer, free_port
from tests.helpers import step
from tests.test_client import baton


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("baton: ")
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [["status", "x"], ["list"], ["checkpoints", "x"], ["cancel", "x"], ["pause", "x"],
     ["resume", "x"], ["retry", "x"], ["rollback", "x", "1"]],
)  # fmt: skip
def test_an_unreachable_redis_is_one_line_and_exit_3(
    args: list[str], worker_env: dict[str, str]
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    ran = baton(*args, env={**worker_env, "BATON_REDIS_URL": url}, timeout=60)
    assert ran.returncode == 3
    line = one_line(ran.stderr)
    assert f"cannot reach Redis at {url}" in line and "hint:" in line


def test_the_traceback_is_there_on_request(worker_env: dict[str, str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    ran = baton("--debug", "list", env={**worker_env, "BATON_REDIS_URL": url}, timeout=60)
    assert ran.returncode == 3
    assert "Traceback" in ran.stderr and ran.stderr.strip().splitlines()[-1].startswith("baton: ")


@pytest.mark.parametrize(
    ("env", "code", "expected"),
    [
        ({"BATON_REDIS_URL": "localhost:6379"}, 3, "BATON_REDIS_URL: "),
        ({"BATON_AGENT_MODULES": "tests.agents,no_such_module"}, 2,
         "BATON_AGENT_MODULES names 'no_such_module', which is not importable"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_line(
    env: dict[str, str], code: int, expected: str, worker_env: dict[str, str]
) -> None:
    ran = baton("agents", env={**worker_env, **env}, timeout=60)
    assert ran.returncode == code
    assert expected in one_line(ran.stderr)


def test_a_yaml_error_names_the_file_line_and_column(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nsteps:\n  - {agent_id: testkit, task_type: [echo\n")
    ran = baton("run", str(bad), env=worker_env)
    assert ran.returncode == 2
    line = one_line(ran.stderr)
    assert f"{bad}:4:1: not valid YAML: expected ',' or ']'" in line
    assert "<unicode string>" not in line


def test_an_unknown_id_is_refused_with_a_hint(worker_env: dict[str, str]) -> None:
    ran = baton("status", "no-such-workflow", env=worker_env)
    assert ran.returncode == 2
    assert "workflow not found: 'no-such-workflow'" in one_line(ran.stderr)


def test_any_unique_prefix_names_a_workflow(
    orchestrator: WorkflowOrchestrator, worker_env: dict[str, str]
) -> None:
    stem = f"pfx-{uuid.uuid4().hex[:8]}"
    first = orchestrator.create_workflow({"steps": [step("echo")]}, f"{stem}-first")
    second = orchestrator.create_workflow({"steps": [step("echo")]}, f"{stem}-second")

    shown = baton("status", f"{stem}-f", "--json", env=worker_env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["workflow_id"] == first
    assert orchestrator.resolve_id(f"{stem}-s") == second

    both = baton("cancel", stem, env=worker_env)
    assert both.returncode == 2
    line = one_line(both.stderr)
    assert f"'{stem}' begins more than one workflow id: {first}, {second}" in line
    assert orchestrator.get_workflow_status(first).status == "created"  # nothing was done


def test_list_keeps_ids_whole_and_speaks_json(
    orchestrator: WorkflowOrchestrator, worker_env: dict[str, str]
) -> None:
    wid = orchestrator.create_workflow({"name": "x" * 60, "steps": [step("echo")]})
    narrow = baton("list", env={**worker_env, "COLUMNS": "80"})
    assert narrow.returncode == 0, narrow.stderr
    assert wid in narrow.stdout  # whole, at 80 columns, beside a 60-character name
    listed = baton("list", "--json", env=worker_env)
    assert wid in [r["workflow_id"] for r in json.loads(listed.stdout)]


def test_waiting_on_a_queue_no_worker_consumes_says_so(
    orchestrator: WorkflowOrchestrator, worker_env: dict[str, str], workers: object, tmp_path: Path
) -> None:
    haunted = tmp_path / "haunted.yaml"
    haunted.write_text("name: haunted\nsteps:\n  - {agent_id: ghost, task_type: haunt}\n")
    ran = baton("run", str(haunted), "--wait", "--timeout", "8", env=worker_env)
    wid = ran.stdout.splitlines()[0].strip()
    try:
        assert ran.returncode == 4
        lines = ran.stderr.strip().splitlines()
        assert "Traceback" not in ran.stderr
        assert "still running after 8.0s" in lines[-1] and wid in lines[-1]
        assert "no live worker consumes agent.ghost" in lines[-1]
        assert "baton worker --agents ghost" in ran.stderr
        assert orchestrator.unserved_queues(wid) == ["agent.ghost"]
    finally:
        orchestrator.cancel_workflow(wid)
        orchestrator.redis.delete("agent.ghost")


def test_an_existing_id_with_another_definition_is_refused(
    orchestrator: WorkflowOrchestrator, worker_env: dict[str, str], tmp_path: Path
) -> None:
    wid = f"again-{uuid.uuid4().hex[:8]}"
    first = orchestrator.create_workflow({"name": "one", "steps": [step("echo")]}, wid)
    assert orchestrator.create_workflow({"name": "one", "steps": [step("echo")]}, wid) == first
    other = tmp_path / "other.yaml"
    other.write_text("name: two\nsteps:\n  - {agent_id: testkit, task_type: echo}\n")
    ran = baton("run", str(other), "--id", wid, env=worker_env)
    assert ran.returncode == 2
    assert f"workflow {wid} exists with a different definition" in one_line(ran.stderr)
    assert orchestrator.get_workflow_status(wid).name == "one"


def test_refused_credentials_are_one_line_and_exit_3(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis", password="right-one").start()
    try:
        wrong = f"redis://:wrong-one@127.0.0.1:{server.port}/0"
        ran = baton("list", env={**worker_env, "BATON_REDIS_URL": wrong}, timeout=60)
        assert ran.returncode == 3
        line = one_line(ran.stderr)
        assert "Redis refused the credentials" in line and "wrong-one" not in line
    finally:
        server.stop()
