"""The ``baton`` command's failures: one plain line on stderr, a hint, a documented exit
code (2 refused, 3 Redis unreachable, 4 timed out), never a traceback; and workflow ids
taken by any unique prefix, as git takes commits."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import RedisServer, free_port
from orchestration.errors import BatonError
from orchestration.settings import BatonSettings
from tests.helpers import step
from tests.test_client import baton, baton_run


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
    ran = baton_run(
        bad, "name: x\nsteps:\n  - {agent_id: testkit, task_type: [echo\n", env=worker_env
    )
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


BROKEN_AGENTS = {
    "needs_dep": ("import leftpad_that_is_not_installed\n",
                  "ModuleNotFoundError: No module named 'leftpad_that_is_not_installed'"),
    "bad_syntax": ("def agent(:\n    pass\n", "SyntaxError: "),
    "raises": ("raise RuntimeError('no API key configured')\n",
               "RuntimeError: no API key configured"),
}  # fmt: skip
EVERY_COMMAND = [
    ["list"], ["status", "x"], ["watch", "x"], ["run", "FILE"], ["register", "FILE"],
    ["cancel", "x"], ["pause", "x"], ["resume", "x"], ["retry", "x"], ["rollback", "x", "1"],
    ["checkpoints", "x"], ["signal", "x", "go"], ["waiting"], ["limits"],
    ["limits", "set", "x", "--rate", "1/s"], ["limits", "reset", "x"], ["agents"], ["worker"],
    ["flower"], ["dashboard"], ["demo"],
]  # fmt: skip


def broken_agents(tmp_path: Path, worker_env: dict[str, str], name: str) -> dict[str, str]:
    """The environment with BATON_AGENT_MODULES naming a module that fails on import."""
    (tmp_path / "mods").mkdir(exist_ok=True)
    (tmp_path / "mods" / f"{name}.py").write_text(BROKEN_AGENTS[name][0])
    path = f"{tmp_path / 'mods'}:{worker_env['PYTHONPATH']}"
    return {**worker_env, "PYTHONPATH": path, "BATON_AGENT_MODULES": f"tests.agents,{name}"}


@pytest.mark.parametrize("name", sorted(BROKEN_AGENTS))
def test_an_agent_module_that_fails_on_import_is_named_in_one_line(
    name: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    ran = baton("list", env=broken_agents(tmp_path, worker_env, name), timeout=60)
    assert ran.returncode == 2
    line = one_line(ran.stderr)
    assert f"agent module '{name}' fails to import: {BROKEN_AGENTS[name][1]}" in line
    assert "hint: fix it, or leave it out of BATON_AGENT_MODULES" in line


@pytest.mark.parametrize("args", EVERY_COMMAND, ids=" ".join)
def test_every_command_refuses_an_agent_module_that_fails_on_import(
    args: list[str], worker_env: dict[str, str], tmp_path: Path
) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("name: x\nsteps:\n  - {agent_id: testkit, task_type: echo}\n")
    args = [str(flow) if a == "FILE" else a for a in args]
    ran = baton(*args, env=broken_agents(tmp_path, worker_env, "raises"), timeout=60)
    assert ran.returncode == 2
    assert "agent module 'raises' fails to import: RuntimeError" in one_line(ran.stderr)


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["watch", "x", "--since", "garbage"], "'garbage' is not an event id"),
     (["watch", "x", "--since", "12-a"], "'12-a' is not an event id"),
     (["list", "--limit", "0"], "'--limit': 0 is not in the range x>=1"),
     (["list", "--limit", "-3"], "'--limit': -3 is not in the range x>=1"),
     (["run", "FILE", "--id", ""], "'--id': must not be empty"),
     (["run", "FILE", "--id", "  "], "'--id': must not be empty"),
     (["signal", "x", "go", "--id", ""], "'--id': must not be empty"),
     (["limits", "set", "x"], "give --rate and/or --concurrency"),
     (["no-such-command"], "No such command 'no-such-command'")],
)  # fmt: skip
def test_bad_arguments_are_refused_in_one_line(
    args: list[str], expected: str, worker_env: dict[str, str], tmp_path: Path
) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("name: x\nsteps:\n  - {agent_id: testkit, task_type: echo}\n")
    args = [str(flow) if a == "FILE" else a for a in args]
    ran = baton(*args, env=worker_env, timeout=60)
    assert ran.returncode == 2
    line = one_line(ran.stderr)
    assert expected in line and "(hint: `baton" in line


@pytest.mark.parametrize(
    ("setting", "url"),
    [("BATON_REDIS_URL", "redis://:pa55word@localhost:99999/0"),
     ("BATON_REDIS_URL", "redis://:pa55word@localhost:port/0"),
     ("BATON_REDIS_URL", "redis://:pa55word@[::1/0"),
     ("BATON_REDIS_URL", "redis://:pa55:w/rd@localhost:6379/0"),
     ("BATON_BROKER_URL", "amqp://user:pa55word@localhost:70000//")],
)  # fmt: skip
def test_a_url_that_does_not_parse_is_one_line_exit_3_and_shows_no_password(
    setting: str, url: str, worker_env: dict[str, str]
) -> None:
    ran = baton("list", env={**worker_env, setting: url}, timeout=60)
    assert ran.returncode == 3
    line = one_line(ran.stderr)
    assert f"{setting} is not a valid URL" in line and "pa55" not in ran.stderr


def test_watch_timeout_bounds_the_whole_watch_while_events_flow(
    orchestrator: WorkflowOrchestrator, worker_env: dict[str, str]
) -> None:
    wid = orchestrator.create_workflow({"name": "busy", "steps": [step("echo")]})
    watch = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "watch", wid, "--timeout", "2"],
        env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    sent = 0
    try:
        while watch.poll() is None:  # an event every 50 ms, as a busy step emits them
            assert sent < 1200, "the watch ran on for a minute of events"
            orchestrator.store.record_events([(wid, "step_1", "progress", f'{{"done":{sent}}}')])
            sent += 1
            with contextlib.suppress(subprocess.TimeoutExpired):
                watch.wait(timeout=0.05)
        out, err = watch.communicate()
    finally:
        watch.kill()
    assert watch.returncode == 4
    assert f"workflow {wid} still created after 2.0s" in one_line(err)
    assert "step_1 progress 0" in out


def register_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / f"{value}.yaml"
    path.write_text(
        f"name: {name}\nsteps:\n  - {{agent_id: testkit, task_type: echo, "
        f"parameters: {{value: {value}}}}}\n"
    )
    return path


def test_register_refuses_another_definition_under_a_name_unless_replace(
    orchestrator: WorkflowOrchestrator, worker_env: dict[str, str], tmp_path: Path
) -> None:
    name = f"reg-{uuid.uuid4().hex[:6]}"
    first, other = register_file(tmp_path, name, "one"), register_file(tmp_path, name, "two")
    for _ in range(2):  # the same definition again: accepted
        ran = baton("register", str(first), env=worker_env)
        assert (ran.returncode, ran.stdout, ran.stderr) == (0, f"{name}\n", "")

    refused = baton("register", str(other), env=worker_env)
    assert refused.returncode == 2
    line = one_line(refused.stderr)
    assert f"a different definition is registered as '{name}'" in line
    assert f"`baton register {other} --replace` replaces it" in line
    assert orchestrator.definitions.get(name)["steps"][0]["parameters"] == {"value": "one"}

    replaced = baton("register", str(other), "--replace", env=worker_env)
    assert (replaced.returncode, replaced.stdout) == (0, f"{name}\n")
    assert orchestrator.definitions.get(name)["steps"][0]["parameters"] == {"value": "two"}


DASHBOARD = ("dashboard", "BATON_DASHBOARD_BASIC_AUTH", "user:password")
FLOWER = ("flower", "BATON_FLOWER_BASIC_AUTH", "user:password[,user2:password2]")


@pytest.mark.parametrize(
    ("command", "setting", "form", "value"),
    [(*DASHBOARD, "pa55word-alone"), (*DASHBOARD, ":pa55word"),
     (*FLOWER, "pa55word-alone"), (*FLOWER, "admin:ok,pa55word-alone"), (*FLOWER, ":pa55word")],
)  # fmt: skip
def test_basic_auth_without_user_and_colon_is_refused_at_start_and_never_shown(
    command: str, setting: str, form: str, value: str, worker_env: dict[str, str]
) -> None:
    ran = baton(command, env={**worker_env, setting: value}, timeout=60)
    assert ran.returncode == 2
    line = one_line(ran.stderr)
    assert f"{setting} must have the form {form}" in line
    assert "pa55" not in ran.stderr and "admin" not in ran.stderr


def test_the_dashboard_server_itself_refuses_basic_auth_without_user_and_colon(
    settings: BatonSettings,
) -> None:
    from workers.dashboard.server import serve

    unreachable = f"redis://127.0.0.1:{free_port()}/0"  # (refused before it is reached)
    bad = settings.model_copy(
        update={"dashboard_basic_auth": SecretStr("pa55word"), "redis_url": unreachable}
    )
    with pytest.raises(BatonError, match="BATON_DASHBOARD_BASIC_AUTH must have the form") as err:
        serve(settings=bad)
    assert "pa55" not in str(err.value)
