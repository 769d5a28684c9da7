"""``baton dashboard``: its JSON API, ``/metrics`` and the page in a real headless Chromium.

Everything is real: the dashboard is a ``python -m workers.cli dashboard`` subprocess on the
session's Redis, workflows run on the session's worker processes, and the page is loaded by
Chromium driven over the DevTools protocol (Tornado's websocket client, no extra package).
A ``gate`` step holds each workflow mid-run so the tests can see it ``running``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from orchestration import WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import free_port
from tests.browser import DevTools, docs_shot, http, shoot
from tests.helpers import EXTRACT_AND_CLEAN, eventually, open_gate, step, wait_gate_started

ROOT = Path(__file__).resolve().parents[1]
FLOWER = "http://flower.example:5555"


def definition(gate: str) -> dict[str, Any]:
    """Customer Intelligence, shortened: real agents, a parallel group with a held member."""
    return {
        "name": "Customer Intelligence",
        "description": "Validate, enrich, classify and score customers in parallel",
        "steps": [
            *EXTRACT_AND_CLEAN,
            {
                "parallel": [
                    {"agent_id": "validator", "task_type": "validate_records",
                     "output_key": "validation"},
                    {"agent_id": "enricher", "task_type": "enrich_records",
                     "output_key": "enrichment"},
                    {"agent_id": "testkit", "task_type": "gate", "output_key": "approval",
                     "parameters": {"name": gate}},
                    [
                        {"agent_id": "classifier", "task_type": "classify_records",
                         "output_key": "value_tiers"},
                        {"agent_id": "scorer", "task_type": "score_records",
                         "output_key": "rfm_scores"},
                    ],
                ],
                "output_key": "customer_insights",
            },
            {"agent_id": "testkit", "task_type": "echo", "output_key": "done",
             "parameters": {"value": "published"}},
        ],
    }  # fmt: skip


# --------------------------------------------------------------------------- the server


def get_json(url: str) -> Any:
    status, ctype, body = http(url)
    assert status == 200, (url, status, body)
    assert ctype.startswith("application/json"), ctype
    return json.loads(body)


@pytest.fixture(scope="module")
def dashboard(
    worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``baton dashboard`` as a subprocess; ready when ``/healthz`` answers (bounded)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("dashboard") / "dashboard.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "dashboard", "--port", str(port),
             "--flower-url", FLOWER],
            env={**os.environ, **worker_env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"dashboard exited: {log_path.read_text()}")
                try:
                    return http(f"{base}/healthz", timeout=1)[0] == 200
                except OSError:
                    return False

            eventually(ready, timeout=30, what="the dashboard to answer /healthz")
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log_path.read_text()
    assert "Traceback" not in text and " ERROR " not in text, text


def scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` parsed: (metric name, labels) -> value; checks the exposition format."""
    status, ctype, body = http(f"{base}/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    line_re = re.compile(r'^([a-z_]+)(?:\{((?:[a-z_]+="[^"]*",?)*)\})? (\S+)$')
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in body.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) baton_[a-z_]+ \S", line), line
            continue
        m = line_re.match(line)
        assert m, f"not Prometheus text: {line!r}"
        labels = frozenset(re.findall(r'([a-z_]+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def next_event(stream: Any) -> tuple[str, Any]:
    """The next server-sent event (name, JSON data), skipping comments and ``retry``."""
    name, data = "message", ""
    while True:
        line = stream.readline().decode()
        assert line, "the event stream ended"
        line = line.rstrip("\n")
        if line == "" and data:
            return name, json.loads(data)
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]


def metric(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:  # fmt: skip
    return scraped.get((name, frozenset(labels.items())), 0.0)


def steps_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for node in doc["nodes"]:
        if node["kind"] == "task":
            found[node["step"]["step_id"]] = node["step"]
        elif node["kind"] == "group":
            for branch in node["branches"]:
                found.update({s["step_id"]: s for s in branch})
    return found


# --------------------------------------------------------------------------- API and metrics


def test_api_and_metrics_follow_a_workflow_with_a_parallel_group(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis[bytes], dashboard: str
) -> None:
    before = scrape(dashboard)
    gate = f"dash-{uuid.uuid4().hex[:8]}"
    wid = orch.run_workflow(definition(gate))
    wait_gate_started(raw_redis, gate)

    # Held mid-run: listed as running, the gate step running on its first attempt.
    listed = get_json(f"{dashboard}/api/workflows")
    [row] = [w for w in listed["workflows"] if w["workflow_id"] == wid]
    assert row["status"] == "running"
    assert (row["name"], row["progress"], row["completion_percentage"]) == (
        "Customer Intelligence", "2/4", 50.0,
    )  # fmt: skip
    assert row["duration"] > 0 and row["created_at"] and row["finished_at"] is None
    assert "testkit.gate" in row["running_steps"]

    held = get_json(f"{dashboard}/api/workflows/{wid}")
    steps = steps_of(held)
    assert held["status"] == "running"
    assert (steps["step_3.3"]["agent_id"], steps["step_3.3"]["status"]) == ("testkit", "running")
    assert steps["step_3.3"]["attempt"] == 1 and steps["step_3.3"]["started_at"]
    assert steps["step_4"]["status"] == "pending" and steps["step_4"]["attempt"] is None
    assert (steps["step_1"]["status"], steps["step_1"]["attempt"]) == ("completed", 1)
    [group] = [n for n in held["nodes"] if n["kind"] == "group"]
    assert group["step_id"] == "step_3" and group["status"] == "running"
    assert [[s["step_id"] for s in b] for b in group["branches"]] == [
        ["step_3.1"], ["step_3.2"], ["step_3.3"], ["step_3.4.1", "step_3.4.2"],
    ]  # fmt: skip

    # Server-sent events: the document now, then after each change, until it is terminal;
    # the stream's wait on Redis pub/sub does not hold other requests up.
    stream = urllib.request.urlopen(f"{dashboard}/api/workflows/{wid}/events", timeout=30)
    assert stream.headers["Content-Type"] == "text/event-stream"
    first = next_event(stream)
    assert first[0] == "workflow" and first[1]["status"] == "running"
    assert http(f"{dashboard}/healthz", timeout=5)[0] == 200

    held_from = time.monotonic()
    open_gate(raw_redis, gate)
    ctx = orch.wait(wid, timeout=60)
    held_for = time.monotonic() - held_from
    assert ctx.status == WorkflowStatus.COMPLETED
    events = [first]
    while events[-1][0] != "end":
        events.append(next_event(stream))
    stream.close()
    assert events[-2][0] == "workflow" and events[-2][1]["status"] == "completed"
    assert steps_of(events[-2][1])["step_3.3"]["status"] == "completed"
    assert len(events) >= 4  # running, at least one change (gate, group, step_4), completed

    done = get_json(f"{dashboard}/api/workflows/{wid}")
    steps = steps_of(done)
    assert (done["status"], done["progress"], done["completion_percentage"]) == (
        "completed", "4/4", 100.0,
    )  # fmt: skip
    expected_agents = {
        "step_1": "data_processor", "step_2": "data_processor", "step_3.1": "validator",
        "step_3.2": "enricher", "step_3.3": "testkit", "step_3.4.1": "classifier",
        "step_3.4.2": "scorer", "step_4": "testkit",
    }  # fmt: skip
    assert {sid: s["agent_id"] for sid, s in steps.items()} == expected_agents
    for sid, s in steps.items():
        result = ctx.task_results[sid]
        assert (s["status"], s["attempt"], s["max_attempts"]) == ("completed", 1, 1), sid
        assert (s["started_at"], s["finished_at"]) == (result.started_at, result.finished_at)
        assert s["execution_time"] == round(result.execution_time, 4)
        assert s["flower_url"].startswith(f"{FLOWER}/tasks?name={s['agent_id']}.{s['task_type']}")
        assert s["worker"] and "&worker=" in s["flower_url"]
    assert done["nodes"][2]["status"] == "completed" and done["nodes"][2]["success_rate"] == 1.0
    assert done["duration"] >= steps["step_3.3"]["execution_time"] > 0
    checkpoints = done["checkpoints"]
    assert [c["version"] for c in checkpoints] == list(range(len(checkpoints)))
    assert {c["step"] for c in checkpoints[1:]} == {*expected_agents, "step_3"}
    assert "data:approval" in next(c for c in checkpoints if c["step"] == "step_3.3")["changed"]

    status, ctype, body = http(f"{dashboard}/api/workflows/no-such-workflow")
    assert (status, json.loads(body)) == (404, {"error": "no workflow no-such-workflow"})

    # /metrics: counters are cumulative across the session, so compare deltas.
    after = scrape(dashboard)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("baton_workflows_total", status="started") == 1
    assert delta("baton_workflows_total", status="completed") == 1
    assert delta("baton_workflows_total", status="failed") == 0
    for agent, task in [("testkit", "gate"), ("testkit", "echo"), ("scorer", "score_records")]:
        labels = {"agent": agent, "task_type": task}
        assert delta("baton_steps_total", status="completed", **labels) == 1, task
        assert delta("baton_step_duration_seconds_count", **labels) == 1, task
        assert delta("baton_step_duration_seconds_bucket", le="+Inf", **labels) == 1, task
    # The gate's observation fell in exactly the buckets at or above its duration.
    gate_seconds = ctx.task_results["step_3.3"].execution_time
    labels = {"agent": "testkit", "task_type": "gate"}
    assert gate_seconds <= held_for + 1
    assert delta("baton_step_duration_seconds_sum", **labels) == pytest.approx(gate_seconds)
    bounds = sorted(
        float(dict(k[1])["le"])
        for k in after
        if k[0] == "baton_step_duration_seconds_bucket" and set(labels.items()) < k[1]
    )
    assert bounds[-1] == math.inf and len(bounds) >= 4
    counts = [
        metric(after, "baton_step_duration_seconds_bucket", le=_le(b), **labels) for b in bounds
    ]
    assert counts == sorted(counts)  # cumulative
    for b in bounds:
        got = delta("baton_step_duration_seconds_bucket", le=_le(b), **labels)
        assert got == (1 if gate_seconds <= b else 0), (b, gate_seconds)


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else (str(int(bound)) if bound.is_integer() else str(bound))


STATUS = "document.querySelector('#workflow') && document.querySelector('#workflow').dataset.status"


def step_status(step_id: str) -> str:
    return f"(document.querySelector('.step[data-step-id=\"{step_id}\"]') || {{}}).dataset?.status"


def test_the_page_shows_a_workflow_progress_to_completed_in_headless_chromium(
    orch: WorkflowOrchestrator,
    raw_redis: redis.Redis[bytes],
    dashboard: str,
    chromium: str,
    tmp_path: Path,
) -> None:
    gate = f"dash-{uuid.uuid4().hex[:8]}"
    wid = orch.run_workflow(definition(gate))
    wait_gate_started(raw_redis, gate)

    async def drive() -> None:
        page = await DevTools.connect(chromium)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=1200, height=800, deviceScaleFactor=1, mobile=False,
        )  # fmt: skip

        # The list: the workflow is there, running, with its progress bar at 2 of 4.
        await page.goto(f"{dashboard}/")
        row = f"document.querySelector('tr.wf[data-workflow-id=\"{wid}\"]')"
        assert await page.until(f"{row} && {row}.dataset.status", 20, "the row") == "running"
        assert "2/4" in await page.js(f"{row}.innerText")
        width = await page.js(f"{row}.querySelector('.progress > div').style.width")
        assert width == "50%"
        await shoot(page, tmp_path / "list.png")  # kept with the test's files, for a failure

        # Click through to the workflow: running, the held gate running, the rest pending.
        await page.js(f"{row}.click()")
        assert await page.until(STATUS, 20, "the workflow page") == "running"
        assert await page.until(step_status("step_3.3"), 10, "the gate") == "running"
        assert await page.js(step_status("step_4")) == "pending"
        assert await page.js(step_status("step_1")) == "completed"
        assert await page.js("location.pathname") == f"/workflow/{wid}"
        group = await page.js(
            "[...document.querySelectorAll('.group[data-group-id=\"step_3\"] .step')]"
            ".map(e => e.dataset.stepId)"
        )
        assert group == ["step_3.1", "step_3.2", "step_3.3", "step_3.4.1", "step_3.4.2"]
        await page.until("!!document.querySelector('#live.on')", 10, "the event stream")
        assert "server-sent events" in await page.js("document.querySelector('#live').innerText")
        # A running bar grows by the clock, between events.
        gate_bar = "document.querySelector('.step[data-step-id=\"step_3.3\"] .bar')"
        grow = f"parseFloat({gate_bar}.style.width)"
        first = await page.js(grow)
        await page.until(f"{grow} > {first}", 10, "the running bar to grow")
        await shoot(page, tmp_path / "running.png")

        # Opened: the page follows to completed by itself (no reload).
        await asyncio.to_thread(open_gate, raw_redis, gate)
        assert await page.until(f"{STATUS} === 'completed' && {STATUS}", 60, "completed")
        statuses = await page.js(
            "[...document.querySelectorAll('.step')].map(e => e.dataset.status)"
        )
        assert statuses == ["completed"] * 8
        assert "4/4" in await page.js("document.querySelector('#progress-text').innerText")
        attempts = await page.js(
            "[...document.querySelectorAll('.step .attempts')].map(e => e.innerText)"
        )
        assert attempts == ["1/1"] * 8
        versions = await page.js("document.querySelectorAll('#checkpoints tbody tr').length")
        assert versions == len(orch.get_checkpoints(wid))
        link = await page.js(
            "document.querySelector('.step[data-step-id=\"step_3.3\"] a.flower').href"
        )
        assert link.startswith(f"{FLOWER}/tasks?name=testkit.gate&worker=")

        await shoot(page, docs_shot("dashboard.png", tmp_path))
        page.ws.close()

    asyncio.run(drive())
    assert orch.get_workflow_status(wid).status == WorkflowStatus.COMPLETED
    assert docs_shot("dashboard.png", tmp_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failed_workflow_shows_attempts_the_failure_and_its_compensation(
    orch: WorkflowOrchestrator, dashboard: str
) -> None:
    before = scrape(dashboard)
    wid = orch.run_workflow(
        {
            "name": "trip",
            "steps": [
                step("reserve", "seat", item="BA117"),
                {**step("flaky", "payment", failures=1), "retries": 2, "retry_backoff": 0.1},
                step("fail", message="no confirmation"),
            ],
        }
    )
    ctx = orch.wait(wid, timeout=60)
    assert ctx.status == WorkflowStatus.FAILED

    doc = get_json(f"{dashboard}/api/workflows/{wid}")
    steps = steps_of(doc)
    assert (doc["status"], doc["failed_step"], doc["error"]) == (
        "failed", "step_3", "ValueError: no confirmation",
    )  # fmt: skip
    assert doc["compensation"]["compensated"] == ["step_1"]
    assert steps["step_1"]["compensated"] and steps["step_1"]["status"] == "completed"
    assert (steps["step_2"]["attempt"], steps["step_2"]["max_attempts"]) == (2, 3)
    assert steps["step_2"]["status"] == "completed"
    assert (steps["step_3"]["status"], steps["step_3"]["error"]) == (
        "failed", "ValueError: no confirmation",
    )  # fmt: skip
    assert all(s["started_at"] and s["finished_at"] for s in steps.values())
    [row] = [
        w for w in get_json(f"{dashboard}/api/workflows")["workflows"] if w["workflow_id"] == wid
    ]
    assert row["status"] == "failed" and row["finished_at"] and row["duration"] > 0

    after = scrape(dashboard)
    failed = {"agent": "testkit", "task_type": "fail", "status": "failed"}
    assert (
        metric(after, "baton_steps_total", **failed) - metric(before, "baton_steps_total", **failed)
        == 1
    )
    assert (
        metric(after, "baton_workflows_total", status="failed")
        - metric(before, "baton_workflows_total", status="failed")
        == 1
    )


APPROVAL_FLOW = {"name": "approve in the dashboard", "steps": [
    step("echo", "draft", value="v1"),
    {"wait_for": "approval", "output_key": "approval", "schema": {
        "type": "object",
        "properties": {"approved": {"type": "boolean"}, "note": {"type": "string"}},
        "required": ["approved", "note"]}},
    step("echo", "done", value="v2")]}  # fmt: skip


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_a_map_shows_as_counts_while_it_runs_and_when_done(
    orch: WorkflowOrchestrator, raw_redis: redis.Redis[bytes], dashboard: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    items = [{"value": i, **({"hold": 30} if i < 2 else {})} for i in range(40)]
    wid = orch.run_workflow(
        {"steps": [step("echo", "src", value=items),
                   {"map": {"over": "src.value", "agent_id": "testkit", "task_type": "square",
                            "parameters": {"tag": tag}}, "output_key": "sq", "batch_size": 5}]}
    )  # fmt: skip
    wait_gate_started(raw_redis, tag)  # the first batch holds at item 0
    running = next(
        n for n in get_json(f"{dashboard}/api/workflows/{wid}")["nodes"] if n["kind"] == "map"
    )
    assert (running["status"], running["total"], running["over"]) == ("running", 40, "src.value")
    assert running["done"] < 40 and running["running"] >= 1
    assert "branches" not in running and "items" not in running  # counts, not 40 rows
    open_gate(raw_redis, tag, times=5)
    orch.wait(wid, timeout=60)
    done = next(
        n for n in get_json(f"{dashboard}/api/workflows/{wid}")["nodes"] if n["kind"] == "map"
    )
    assert (done["status"], done["done"], done["failed"], done["total"]) == ("completed", 40, 0, 40)


def test_a_sub_workflow_and_its_parent_link_to_each_other(
    orch: WorkflowOrchestrator, dashboard: str
) -> None:
    wid = orch.run_workflow(
        {"steps": [step("echo", "a"), {"workflow": {"name": "kid", "steps": [step("echo", "b")]}}]}
    )
    assert orch.wait(wid, timeout=60).status == WorkflowStatus.COMPLETED
    cid = f"{wid}.step_2"
    parent, kid = (get_json(f"{dashboard}/api/workflows/{w}") for w in (wid, cid))
    assert (parent["children"], parent["parent"]) == ([cid], None)
    assert (kid["parent"], kid["parent_step"], kid["name"]) == (wid, "step_2", "kid")
    listed = {w["workflow_id"]: w for w in get_json(f"{dashboard}/api/workflows")["workflows"]}
    assert listed[cid]["parent"] == wid


def test_a_signal_cannot_be_posted_without_the_pages_xsrf_token(
    orch: WorkflowOrchestrator, dashboard: str
) -> None:
    wid = orch.run_workflow(APPROVAL_FLOW)
    orch.wait(wid, timeout=30, until=("waiting",))
    url = f"{dashboard}/api/workflows/{wid}/signals/approval"
    body = json.dumps({"approved": True, "note": "x"}).encode()
    code, _ = post(url, body, {"Content-Type": "application/json"})
    assert code == 403  # what another site's form could send: refused
    with urllib.request.urlopen(f"{dashboard}/", timeout=10) as page:  # the page's token
        cookie = page.headers["Set-Cookie"].split(";", 1)[0]
    assert cookie.startswith("_xsrf=")
    both = {"Cookie": cookie, "X-XSRFToken": cookie.split("=", 1)[1]}
    code, answer = post(url, json.dumps({"approved": "yes", "note": "?"}).encode(), both)
    assert code == 409 and "approved: 'yes' is not of type 'boolean'" in answer["error"]
    assert orch.get_workflow_status(wid).status == WorkflowStatus.WAITING
    orch.cancel_workflow(wid)


def test_an_approval_is_given_in_the_dashboards_form_in_headless_chromium(
    orch: WorkflowOrchestrator, dashboard: str, chromium: str, tmp_path: Path
) -> None:
    wid = orch.run_workflow(APPROVAL_FLOW)
    orch.wait(wid, timeout=30, until=("waiting",))

    async def drive() -> None:
        page = await DevTools.connect(chromium)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.goto(f"{dashboard}/workflow/{wid}")
        assert await page.until(STATUS, 20, "the workflow page") == "waiting"
        assert await page.until(step_status("step_2"), 10, "the wait") == "waiting"
        form = "document.querySelector('form.signal[data-signal=\"approval\"]')"
        assert await page.until(f"!!{form}", 10, "the signal form")
        fields = await page.js(f"[...{form}.querySelectorAll('[name]')].map(e => e.name)")
        assert fields == ["approved", "note"]
        await page.js(f"{form}.querySelector('[name=approved]').checked = true")
        await page.js(f"{form}.querySelector('[name=note]').value = 'looks right'")
        await shoot(page, tmp_path / "waiting.png")
        await page.js(f"{form}.requestSubmit()")
        assert await page.until(f"{STATUS} === 'completed' && {STATUS}", 30, "completed")
        page.ws.close()

    asyncio.run(drive())
    ctx = orch.get_context(wid)
    assert ctx.shared_data["approval"] == {"approved": True, "note": "looks right"}
    [entry] = [
        h for h in ctx.execution_history if (h.step, h.event) == ("step_2", "step_completed")
    ]
    assert entry.model_extra and entry.model_extra["by"] == "dashboard"
