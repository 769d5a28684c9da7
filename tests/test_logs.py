"""Worker logs: every line about a step names its workflow, step and agent."""

from __future__ import annotations

import json

import pytest

from orchestration import WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers
from orchestration.settings import BatonSettings


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_worker_log_lines_carry_the_workflow_step_and_agent(
    log_format: str, orch: WorkflowOrchestrator, worker_env: dict[str, str], settings: BatonSettings
) -> None:
    assert settings.redis_url
    log_dir = settings.home / f"logs-{log_format}"
    pool = LocalWorkers(
        settings.redis_url,
        [["solo"]],
        env={**worker_env, "BATON_LOG_FORMAT": log_format},
        log_dir=log_dir,
    )
    pool.start(orch.app)
    try:
        wid = orch.run_workflow(
            {
                "steps": [
                    {
                        "agent_id": "solo",
                        "task_type": "note",
                        "output_key": "n",
                        "parameters": {"value": 42},
                    }
                ]
            }
        )
        assert orch.wait(wid, timeout=60).status == WorkflowStatus.COMPLETED
    finally:
        pool.stop()

    [logfile] = log_dir.glob("worker-solo.*.log")
    lines = [line for line in logfile.read_text().splitlines() if wid in line]
    if log_format == "json":
        records = [json.loads(line) for line in lines if line.startswith("{")]
        agent_line = next(r for r in records if r["logger"] == "baton.agents.solo")
        assert agent_line["message"] == "noting 42"
        assert (agent_line["workflow_id"], agent_line["step"], agent_line["agent"]) == (
            wid,
            "step_1",
            "solo",
        )
        done = next(r for r in records if "succeeded" in r["message"])
        assert (done["workflow_id"], done["step"], done["agent"]) == (wid, "step_1", "solo")
    else:
        assert any(f"[{wid} step_1 solo] baton.agents.solo: noting 42" in line for line in lines), (
            lines
        )
