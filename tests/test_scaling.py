"""Horizontal scaling: more worker processes on an agent's queue share its work."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from orchestration import WorkflowContext, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers
from orchestration.settings import BatonSettings


class SlowAPI(BaseHTTPRequestHandler):
    """A remote service that takes its time, standing in for an LLM or a third-party API."""

    def do_GET(self) -> None:  # noqa: N802
        ms = int(parse_qs(urlsplit(self.path).query)["ms"][0])
        time.sleep(ms / 1000)  # the remote side's latency (test code, not an agent)
        body = json.dumps({"waited_ms": ms}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def slow_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/answer"
    server.shutdown()


def max_overlap(ctx: WorkflowContext) -> int:
    """How many members were running at once, from their recorded start and finish times."""
    edges = []
    for r in ctx.task_results.values():
        if r.agent_id == "slowapi" and r.started_at and r.finished_at:
            edges += [
                (datetime.fromisoformat(r.started_at), 1),
                (datetime.fromisoformat(r.finished_at), -1),
            ]
    running = peak = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):
        running += delta
        peak = max(peak, running)
    return peak


def run_group(orch: WorkflowOrchestrator, url: str, processes: int, env: dict[str, str],
              settings: BatonSettings) -> WorkflowContext:  # fmt: skip
    assert settings.redis_url
    pool = LocalWorkers(settings.redis_url, [["slowapi"]] * processes, concurrency=1, env=env,
                        log_dir=settings.home / "logs")  # fmt: skip
    pool.start(orch.app)
    try:
        members = [
            {"agent_id": "slowapi", "task_type": "remote_call", "parameters": {"url": url}}
        ] * 60
        wid = orch.run_workflow({"name": f"60 calls on {processes}", "steps": [
            {"parallel": members, "output_key": "calls"}]})  # fmt: skip
        return orch.wait(wid, timeout=120)
    finally:
        pool.stop()


def test_three_worker_processes_share_an_agents_queue(
    orch: WorkflowOrchestrator, slow_api: str, worker_env: dict[str, str], settings: BatonSettings
) -> None:
    one = run_group(orch, slow_api, 1, worker_env, settings)
    three = run_group(orch, slow_api, 3, worker_env, settings)

    for ctx in (one, three):
        assert ctx.status == WorkflowStatus.COMPLETED
        assert ctx.shared_data["calls"]["successful_tasks"] == 60
    # One process: one call at a time. Three: three at once, each process taking a share.
    assert max_overlap(one) == 1, {r.worker for r in one.task_results.values()}
    assert max_overlap(three) == 3
    shares: dict[str | None, int] = {}
    for r in three.task_results.values():
        if r.agent_id == "slowapi":
            shares[r.worker] = shares.get(r.worker, 0) + 1
    assert len(shares) == 3 and min(shares.values()) >= 5, shares
    print(f"group of 60: {one.shared_data['calls']['total_execution_time']:.2f}s on 1 process, "
          f"{three.shared_data['calls']['total_execution_time']:.2f}s on 3")  # fmt: skip
