"""The LLM example workflow on real workers: data steps on the session's prefork workers,
the async ``llm`` agent on an asyncio-pool worker pointed at the loopback chat API, its
tokens streamed to a watcher while it runs, its rate limit held per API key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration import WorkflowOrchestrator, WorkflowStatus
from orchestration.client.embedded import LocalWorkers
from orchestration.settings import BatonSettings
from tests.conftest import NO_CONTROL
from tests.llm_server import LLMServer, reply_for

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-workflow-5e1d"


@pytest.fixture(scope="module")
def llm_worker(
    orchestrator: WorkflowOrchestrator,
    workers: LocalWorkers,
    worker_env: dict[str, str],
    settings: BatonSettings,
) -> Iterator[LLMServer]:
    assert settings.redis_url
    with LLMServer([KEY], quota_per_second=5, token_delay=0.005) as server:
        env = worker_env | NO_CONTROL | {"BATON_LLM_BASE_URL": server.url, "BATON_LLM_API_KEY": KEY}
        pool = LocalWorkers(
            settings.redis_url, [["llm"]], concurrency=50, pool="asyncio", env=env,
            log_dir=settings.home / "logs-llm",
        )  # fmt: skip
        pool.start(orchestrator.app)
        try:
            yield server
        finally:
            pool.stop()


def test_the_llm_example_summarises_the_analysis_into_the_report(
    orchestrator: WorkflowOrchestrator, llm_worker: LLMServer
) -> None:
    wid = orchestrator.run_workflow(ROOT / "examples" / "llm_summary.yaml")
    events = list(orchestrator.stream(wid, timeout=120))
    ctx = orchestrator.get_context(wid)

    assert ctx.status == WorkflowStatus.COMPLETED, ctx.task_results
    sent = llm_worker.stats()["keys"][KEY]["last_request"]["messages"]
    summary = ctx.shared_data["executive_summary"]["summary"]
    assert summary == reply_for(sent)
    # The analysis went to the model, and its figures are what came back digested.
    assert '"record_count":1200' in sent[-1]["content"]
    # The tokens reached the watcher while the step ran, in order, before its commit.
    step = ctx.task_results["step_4"].step_id
    emitted = [e for e in events if e.event == "emitted" and e.step == step]
    committed = next(i for i, e in enumerate(events) if e.event == "committed" and e.step == step)
    assert len(emitted) > 1 and "".join(e.data for e in emitted) == summary
    assert all(events.index(e) < committed for e in emitted)
    report = Path(ctx.shared_data["final_report"]["report_path"])
    assert summary in report.read_text()


def test_the_llm_agents_rate_limit_keeps_a_burst_under_the_providers_quota(
    orchestrator: WorkflowOrchestrator, llm_worker: LLMServer
) -> None:
    """Ten summaries at once against a provider that allows 5 a second: set to 4/s at run
    time, the limit spaces them, so the provider refuses none."""
    orchestrator.set_limit("llm.summarise", rate="4/s")
    llm_worker.reset()
    try:
        step = {"agent_id": "llm", "task_type": "summarise",
                "parameters": {"input_key": "facts", "max_tokens": 32}}  # fmt: skip
        wid = orchestrator.run_workflow({"name": "burst", "steps": [
            {"agent_id": "testkit", "task_type": "echo", "output_key": "facts",
             "parameters": {"value": {"revenue": 1200.5, "orders": 30}}},
            {"parallel": [step] * 10, "output_key": "summaries"}]})  # fmt: skip
        ctx = orchestrator.wait(wid, timeout=60)
    finally:
        orchestrator.reset_limit("llm.summarise")
    assert ctx.status == WorkflowStatus.COMPLETED
    assert ctx.shared_data["summaries"]["successful_tasks"] == 10
    stats = llm_worker.stats()["keys"][KEY]
    assert (stats["accepted"], stats["rejected_429"]) == (10, 0)
    assert stats["max_per_second"] <= 5
