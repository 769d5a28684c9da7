"""Monitoring in Flower: every agent task by name, queue, arguments and worker."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestration import WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, free_port
from tests.helpers import eventually, step

ROOT = Path(__file__).resolve().parents[1]

AUTH = "ops:s3cret-pass"


def get(url: str, auth: str | None = AUTH) -> Any:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def flower(worker_env: dict[str, str], workers: LocalWorkers) -> Iterator[str]:
    port = free_port()
    env = {**worker_env, "BATON_FLOWER_BASIC_AUTH": AUTH}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "flower",
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # Ready when Flower answers and has seen our workers' heartbeats.
        eventually(
            lambda: set(workers.names) <= set(get(f"{base}/api/workers?refresh=1")),
            60,
            "Flower to list the workers",
        )
        yield base
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
        assert AUTH.split(":")[1] not in out  # the password is never logged


def test_flower_shows_every_step_task_with_its_workflow_and_worker(
    flower: str, orch: WorkflowOrchestrator, workers: LocalWorkers
) -> None:
    wid = orch.run_workflow(
        {
            "steps": [
                step("echo", "a"),
                {
                    "parallel": [step("echo", "m1"), step("echo", "m2"), step("fail")],
                    "output_key": "g",
                },
                {
                    "agent_id": "analyzer",
                    "task_type": "trend_analysis",
                    "output_key": "t",
                    "parameters": {"input_key": "a"},
                },
            ]
        }
    )
    # The trend step fails on purpose (echo output holds no records): Flower shows that too.
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.FAILED

    def ours() -> dict[str, dict[str, Any]]:
        tasks = get(f"{flower}/api/tasks?limit=1000")
        mine = {t["args"]: t for t in tasks.values() if wid in str(t.get("args"))}
        settled = all(
            t.get("worker") and t["state"] in ("SUCCESS", "FAILURE") for t in mine.values()
        )
        return mine if len(mine) >= 6 and settled else {}

    tasks = eventually(ours, 30, "Flower to record the workflow's tasks")
    by_step = {}
    for args, t in tasks.items():
        step_id = args.split("'")[3]  # args are shown as "('<workflow id>', '<step>', <run>)"
        by_step[step_id] = t
    assert by_step["step_1"]["name"] == "testkit.echo"
    assert by_step["step_2.3"]["name"] == "testkit.fail"
    assert by_step["step_2"]["name"] == "baton.aggregate"
    assert by_step["step_3"]["name"] == "analyzer.trend_analysis"
    assert by_step["step_3"]["state"] == "FAILURE"  # the step failed; its worker did not
    assert by_step["step_2.1"]["state"] == by_step["step_2.3"]["state"] == "SUCCESS"
    assert {t["worker"] for t in tasks.values()} <= set(workers.names)
    routing = {t["name"]: t.get("routing_key") for t in tasks.values()}
    assert routing["testkit.echo"] == "agent.testkit"
    assert routing["analyzer.trend_analysis"] == "agent.analyzer"

    # Workers are listed with the agent queues they consume.
    listed = get(f"{flower}/api/workers")
    queues = {w: {q["name"] for q in info.get("active_queues", [])} for w, info in listed.items()}
    assert {"agent.analyzer", "agent.testkit", "baton.control"} <= queues[workers.names[0]]
    lengths = get(f"{flower}/api/queues/length")
    assert "active_queues" in lengths
    with pytest.raises(urllib.error.HTTPError, match="401"):
        get(f"{flower}/api/workers", auth=None)


def test_flowers_own_pages_show_the_agents_in_headless_chromium(
    flower: str, orch: WorkflowOrchestrator, chromium: str, tmp_path: Path
) -> None:
    """Drives Flower's dashboard in Chromium (screenshots for docs/: ``./dev screenshots``)."""
    import asyncio

    from tests.browser import DevTools, docs_shot, shoot

    ctx = orch.wait(orch.run_workflow({"steps": [
        step("echo", "a"), {"parallel": [step("echo", "m1"), step("echo", "m2")]},
    ]}), timeout=60)  # fmt: skip
    assert ctx.status == WorkflowStatus.COMPLETED

    async def drive() -> tuple[list[str], list[str]]:
        page = await DevTools.connect(chromium)
        await page.send("Network.enable")
        token = base64.b64encode(AUTH.encode()).decode()
        await page.send("Network.setExtraHTTPHeaders", headers={"Authorization": f"Basic {token}"})
        await page.goto(f"{flower}/tasks")
        names = await page.until(
            "Array.from(document.querySelectorAll('#tasks-table tbody tr td:first-child'))"
            ".map(td => td.innerText).filter(t => t.includes('.')).length >= 3 &&"
            "Array.from(document.querySelectorAll('#tasks-table tbody tr')).map(r => r.innerText)",
            30, "Flower's task list",
        )  # fmt: skip
        await shoot(page, docs_shot("flower-tasks.png", tmp_path))
        await page.goto(f"{flower}/")
        rows = (
            "Array.from(document.querySelectorAll('#workers-table tbody tr')).map(r => r.innerText)"
        )
        workers = await page.until(
            f"{rows}.filter(t => t.includes('@')).length > 0 && {rows}", 30, "Flower's worker list"
        )
        await shoot(page, docs_shot("flower-workers.png", tmp_path))
        return names, workers

    names, workers = asyncio.run(drive())
    assert any("testkit.echo" in row for row in names)
    assert any("baton.aggregate" in row for row in names)
    assert any("testkit" in row for row in workers)  # the workers listed by their agents
