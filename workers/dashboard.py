"""``baton dashboard``: workflows (not tasks) on a web page, read from the same Redis state.

Flower shows Celery tasks; a workflow is invisible there. This is a small Tornado app (Tornado
ships with Flower, so nothing new to install) that reads the state store and serves:

- ``/``: one static page, vanilla JS, no build step and no CDN (it must work offline);
- ``/api/workflows``: the recent workflows with status, progress and duration;
- ``/api/workflows/<id>``: one workflow's steps and parallel groups, each step's agent,
  status, attempts and timing, its checkpoints, error and compensation;
- ``/api/workflows/<id>/events``: the same document as server-sent events, one per change,
  driven by the workflow's Redis pub/sub channel (``StateStore.subscribe``);
- ``/metrics``: the Prometheus counters kept by the Lua scripts (``keys.metrics_key``);
- ``/healthz``: liveness, and Redis reachability.

Redis calls block, so every one runs on a thread pool: the IOLoop only ever writes responses.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import redis
import tornado.iostream
import tornado.web

from orchestration.errors import WorkflowNotFound
from orchestration.models import (
    RunningStep,
    TaskResult,
    WorkflowStatus,
    WorkflowStatusReport,
)
from orchestration.plan import PlannedGroup, PlannedTask
from orchestration.settings import BatonSettings, get_settings, redact
from orchestration.store import StateStore, step_sort_key

log = logging.getLogger("baton.dashboard")

T = TypeVar("T")
DEFAULT_FLOWER_URL = "http://localhost:5555"
AGGREGATOR_AGENT = "baton"  # the agent id of a group's aggregate result (workers.runner)
_ID = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")  # as the client accepts; anything else is 404


# --------------------------------------------------------------------------- reading state


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        parsed = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _seconds(start: str | None, end: str | None, now: datetime) -> float | None:
    """Wall time from ``start`` to ``end`` (or to now, for something still going)."""
    t0 = _parse(start)
    if t0 is None:
        return None
    t1 = _parse(end) or now
    return round(max((t1 - t0).total_seconds(), 0.0), 3)


def workflow_summary(report: WorkflowStatusReport, now: datetime | None = None) -> dict[str, Any]:
    """One row of the workflows table."""
    now = now or datetime.now(UTC)
    end = report.finished_at
    if end is None and report.status.is_terminal:
        end = report.updated_at
    if end is None and report.status == WorkflowStatus.PAUSED:
        end = report.updated_at  # a paused workflow's clock stops
    return {
        "workflow_id": report.workflow_id,
        "name": report.name,
        "status": report.status.value,
        "progress": report.progress,
        "completion_percentage": report.completion_percentage,
        "created_at": report.created_at,
        "updated_at": report.updated_at,
        "finished_at": report.finished_at,
        "duration": _seconds(report.created_at, end, now),
        "running_steps": [f"{r.agent_id}.{r.task_type}" for r in report.running_steps],
        "error": report.error,
        "failed_step": report.failed_step,
    }


def flower_link(flower_url: str, agent_id: str, task_type: str, worker: str | None) -> str:
    """The step's tasks in Flower.

    The Celery task id of a step is not stored (messages carry only workflow and step ids),
    so this is Flower's tasks page filtered by the task name and, once known, the worker:
    Flower 2 pre-fills its search box from the ``name``, ``state`` and ``worker`` parameters.
    """
    params = {"name": f"{agent_id}.{task_type}"}
    if worker:
        params["worker"] = worker
    return f"{flower_url.rstrip('/')}/tasks?{urlencode(params, quote_via=quote)}"


class DashboardReader:
    """Builds the JSON documents the page shows from one ``StateStore``."""

    def __init__(self, store: StateStore, flower_url: str = DEFAULT_FLOWER_URL) -> None:
        self.store = store
        self.flower_url = flower_url

    def workflows(self, limit: int = 50) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        rows = []
        for wid in self.store.list_ids(limit):
            try:
                rows.append(workflow_summary(self.store.get_status(wid), now))
            except WorkflowNotFound:  # expired between the index read and this one
                continue
        return rows

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        """Everything the workflow page shows, read in a few round trips."""
        now = datetime.now(UTC)
        report = self.store.get_status(workflow_id)
        ctx = self.store.get_context(workflow_id)
        plan = self.store.plan(workflow_id)
        inserted = self.store.inserted(workflow_id)
        checkpoints = self.store.get_checkpoints(workflow_id)
        running = {r.step_id: r for r in report.running_steps}
        compensated = set(ctx.compensation.compensated) if ctx.compensation else set()

        # Attempts and retries of the current run: history since it (re)started.
        history = ctx.execution_history
        since = max(
            (
                i
                for i, h in enumerate(history)
                if h.event in ("workflow_started", "workflow_retried", "workflow_resumed")
            ),
            default=0,
        )
        retries: dict[str, int] = {}
        last_error: dict[str, str] = {}
        past: dict[str, Any] = {}  # step_completed/failed lines: a result restored away
        for i, h in enumerate(history):
            if not h.step:
                continue
            if h.event == "step_retry" and i >= since:
                retries[h.step] = max(retries.get(h.step, 0), h.attempt or 1)
                if h.error:
                    last_error[h.step] = h.error
            elif h.event in ("step_completed", "step_failed"):
                past[h.step] = h

        def step_doc(task: PlannedTask) -> dict[str, Any]:
            sid = task.step_id
            result: TaskResult | None = ctx.task_results.get(sid)
            run: RunningStep | None = running.get(sid)
            doc: dict[str, Any] = {
                "step_id": sid,
                "agent_id": task.agent_id,
                "task_type": task.task_type,
                "output_key": task.output_key,
                "group": task.group,
                "dynamic": task.dynamic,
                "max_attempts": task.retries + 1,
                "status": "pending",
                "attempt": None,
                "started_at": None,
                "finished_at": None,
                "execution_time": None,
                "worker": None,
                "error": None,
                "compensated": sid in compensated,
                "restored": False,
            }
            if result is not None:
                doc.update(
                    status=result.status.value,
                    attempt=result.metadata.get("attempt"),
                    started_at=result.started_at,
                    finished_at=result.finished_at,
                    execution_time=round(result.execution_time, 4),
                    worker=result.worker,
                    error=result.error,
                )
            elif run is not None:
                compensating = run.task_type != task.task_type
                doc.update(
                    status="compensating" if compensating else "running",
                    attempt=None if compensating else retries.get(sid, 0) + 1,
                    started_at=run.started_at,
                    worker=run.worker,
                    error=last_error.get(sid),
                )
            elif sid in past:
                h = past[sid]  # committed once, then undone by a restore (saga, rollback)
                doc.update(
                    status=h.status or "completed",
                    attempt=h.attempt,
                    finished_at=h.timestamp,
                    execution_time=h.execution_time,
                    error=h.error,
                    restored=True,
                )
                if h.execution_time is not None and (end := _parse(h.timestamp)):
                    start = end.timestamp() - h.execution_time
                    doc["started_at"] = datetime.fromtimestamp(start, UTC).isoformat()
            elif sid in retries:
                doc.update(status="retrying", attempt=retries[sid], error=last_error.get(sid))
            if doc["status"] in ("running", "compensating"):
                doc["execution_time"] = _seconds(doc["started_at"], None, now)
            doc["flower_url"] = flower_link(
                self.flower_url, task.agent_id, task.task_type, doc["worker"]
            )
            return doc

        # Steps a handoff inserted and a restore removed again: only their history is left.
        known = {t.step_id for t in inserted}
        for sid, h in past.items():
            base = plan.tasks.get(sid.partition(".h")[0])
            if ".h" in sid and sid not in known and base is not None and h.agent_id:
                inserted.append(
                    PlannedTask(
                        step_id=sid,
                        index=base.index,
                        agent_id=h.agent_id,
                        task_type=h.task_type or "",
                        output_key=None,
                        dynamic=True,
                    )
                )
        by_node: dict[int, list[PlannedTask]] = {}
        for t in sorted(inserted, key=lambda t: step_sort_key(t.step_id)):
            by_node.setdefault(t.index, []).append(t)
        nodes: list[dict[str, Any]] = []
        for node in plan.nodes:
            if isinstance(node, PlannedGroup):
                nodes.append(self._group_doc(node, plan.tasks, ctx.task_results, step_doc))
            else:
                nodes.append({"kind": "task", "step": step_doc(node)})
            nodes.extend({"kind": "task", "step": step_doc(t)} for t in by_node.get(node.index, []))

        doc = workflow_summary(report, now)
        doc.update(
            description=plan.description,
            version=ctx.version,
            run=ctx.run,
            total_steps=ctx.total_steps,
            nodes=nodes,
            checkpoints=[c.model_dump() for c in checkpoints],
            compensation=ctx.compensation.model_dump() if ctx.compensation else None,
            shared_data_keys=report.shared_data_keys,
            flower_url=self.flower_url,
            now=now.isoformat(),
        )
        return doc

    @staticmethod
    def _group_doc(
        node: PlannedGroup,
        tasks: dict[str, PlannedTask],
        results: dict[str, TaskResult],
        step_doc: Callable[[PlannedTask], dict[str, Any]],
    ) -> dict[str, Any]:
        branches = [[step_doc(tasks[sid]) for sid in branch] for branch in node.branches]
        members = [s for b in branches for s in b]
        agg = results.get(node.step_id)
        if agg is not None:
            status = agg.status.value
        elif any(s["status"] in ("running", "retrying", "compensating") for s in members):
            status = "running"
        elif any(s["status"] != "pending" for s in members):
            status = "running"  # members done, the chord's callback not yet
        else:
            status = "pending"
        summary = agg.result if agg is not None and isinstance(agg.result, dict) else {}
        return {
            "kind": "group",
            "step_id": node.step_id,
            "output_key": node.output_key,
            "aggregate": node.aggregate,
            "on_failure": node.on_failure,
            "min_success_rate": node.min_success_rate,
            "status": status,
            "success_rate": summary.get("success_rate"),
            "finished_at": agg.finished_at if agg else None,
            "branches": branches,
        }


# --------------------------------------------------------------------------- /metrics


_HELP = {
    "baton_workflows_total": ("counter", "Workflows by lifecycle event (started) or end status."),
    "baton_steps_total": ("counter", "Steps committed, by agent, task type and status."),
    "baton_step_duration_seconds": ("histogram", "Time an agent spent on a step, in seconds."),
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _le(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        return math.inf


STEP_BUCKETS = ("0.05", "0.25", "1", "5", "30", "120", "600")  # as BUCKETS in lua/_lib.lua


def render_metrics(counters: dict[str, float]) -> str:
    """The metrics hash in Prometheus' text exposition format (version 0.0.4).

    Each observation is stored in one bucket only (the first whose ``le`` holds it, or
    ``+Inf``: one increment per step instead of one per bucket); Prometheus' cumulative
    buckets and the count are their running sums, made here.
    """
    workflows: dict[str, float] = {}
    steps: dict[tuple[str, str, str], float] = {}
    sums: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, str], dict[str, float]] = {}
    bounds: set[str] = set()
    for name, value in counters.items():
        kind, *parts = name.split("|")
        if kind == "workflows_total" and len(parts) == 1:
            workflows[parts[0]] = value
        elif kind == "steps_total" and len(parts) == 3:
            steps[(parts[0], parts[1], parts[2])] = value
        elif kind == "step_seconds_sum" and len(parts) == 2:
            sums[(parts[0], parts[1])] = value
        elif kind == "step_seconds_in" and len(parts) == 3:
            buckets.setdefault((parts[0], parts[1]), {})[parts[2]] = value
            bounds.add(parts[2])
    bounds |= set(STEP_BUCKETS)
    les = sorted((b for b in bounds if math.isfinite(_le(b))), key=_le)

    out: list[str] = []

    def head(metric: str) -> None:
        kind, text = _HELP[metric]
        out.append(f"# HELP {metric} {text}")
        out.append(f"# TYPE {metric} {kind}")

    head("baton_workflows_total")
    for status in sorted(workflows):
        out.append(f"baton_workflows_total{_labels(status=status)} {_num(workflows[status])}")
    head("baton_steps_total")
    for (agent, task, status), value in sorted(steps.items()):
        labels = _labels(agent=agent, task_type=task, status=status)
        out.append(f"baton_steps_total{labels} {_num(value)}")
    head("baton_step_duration_seconds")
    metric = "baton_step_duration_seconds"
    for agent, task in sorted(set(buckets) | set(sums)):
        got = buckets.get((agent, task), {})
        count = sum(got.values())
        below = 0.0
        for le in les:
            below += got.get(le, 0.0)
            labels = _labels(agent=agent, task_type=task, le=_num(_le(le)))
            out.append(f"{metric}_bucket{labels} {_num(below)}")
        labels = _labels(agent=agent, task_type=task, le="+Inf")
        out.append(f"{metric}_bucket{labels} {_num(count)}")
        labels = _labels(agent=agent, task_type=task)
        out.append(f"{metric}_sum{labels} {_num(sums.get((agent, task), 0.0))}")
        out.append(f"{metric}_count{labels} {_num(count)}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- handlers


class _Base(tornado.web.RequestHandler):
    reader: DashboardReader
    pool: ThreadPoolExecutor

    def initialize(self, reader: DashboardReader, pool: ThreadPoolExecutor) -> None:
        self.reader = reader
        self.pool = pool

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a Redis read off the IOLoop, so one slow read never stalls other clients."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_json(self, value: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(value, separators=(",", ":")))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # JSON errors without tracebacks: messages never include settings or URLs.
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, WorkflowNotFound):
            message = f"no workflow {exc}"
        elif isinstance(exc, redis.RedisError):
            message = "Redis is unreachable"
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            return
        log.error("%s %s failed: %s", self.request.method, self.request.path, value)

    def workflow_id(self, raw: str) -> str:
        if not _ID.match(raw):
            raise tornado.web.HTTPError(404, reason=f"no workflow {raw[:64]}")
        return raw


class PageHandler(_Base):
    page: bytes | None = None

    def get(self, *_: str) -> None:
        if PageHandler.page is None:
            static = resources.files("workers").joinpath("dashboard_static")
            PageHandler.page = static.joinpath("index.html").read_bytes()
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(PageHandler.page)


class WorkflowsHandler(_Base):
    async def get(self) -> None:
        try:
            limit = min(max(int(self.get_argument("limit", "50")), 1), 500)
        except ValueError:
            raise tornado.web.HTTPError(400, reason="limit must be a number") from None
        rows = await self.blocking(self.reader.workflows, limit)
        self.write_json({"workflows": rows, "flower_url": self.reader.flower_url})


class WorkflowHandler(_Base):
    async def get(self, raw_id: str) -> None:
        wid = self.workflow_id(raw_id)
        try:
            doc = await self.blocking(self.reader.workflow, wid)
        except WorkflowNotFound:
            raise tornado.web.HTTPError(404, reason=f"no workflow {wid}") from None
        self.write_json(doc)


def _fingerprint(doc: dict[str, Any]) -> str:
    """The document without what changes by the clock alone (the page ticks those itself)."""
    steps = [
        {k: v for k, v in step.items() if k != "execution_time"}
        for node in doc["nodes"]
        for step in (
            [node["step"]] if node["kind"] == "task" else itertools.chain(*node["branches"])
        )
    ]
    rest = {k: v for k, v in doc.items() if k not in ("now", "duration", "nodes")}
    return json.dumps([rest, steps], sort_keys=True)


class EventsHandler(_Base):
    """Server-sent events: the workflow document after every change, until it is terminal.

    The pub/sub wait (``StateStore.subscribe``, which also wakes once a quiet second) runs
    on the thread pool one step at a time, so the IOLoop stays free; a document identical
    to the last one sent is not sent again.
    """

    closed = False

    def on_connection_close(self) -> None:
        self.closed = True

    async def get(self, raw_id: str) -> None:
        wid = self.workflow_id(raw_id)
        try:
            await self.blocking(self.reader.store.status_of, wid)
        except WorkflowNotFound:
            raise tornado.web.HTTPError(404, reason=f"no workflow {wid}") from None
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("X-Accel-Buffering", "no")
        changes = self.reader.store.subscribe([wid])
        last, quiet = "", 0
        try:
            self.write("retry: 2000\n\n")
            while not self.closed:
                await self.blocking(next, changes)
                doc = await self.blocking(self.reader.workflow, wid)
                key = _fingerprint(doc)
                if key != last:
                    body = json.dumps(doc, separators=(",", ":"))
                    self.write(f"event: workflow\ndata: {body}\n\n")
                    last, quiet = key, 0
                else:
                    quiet += 1
                    if quiet < 15:
                        continue
                    self.write(": keep-alive\n\n")  # proxies keep a talking stream open
                    quiet = 0
                if WorkflowStatus(doc["status"]).is_terminal:
                    self.write("event: end\ndata: {}\n\n")
                    await self.flush()
                    break
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            await self.blocking(changes.close)  # unsubscribes; off the loop, it talks to Redis
        if not self.closed:
            self.finish()


class MetricsHandler(_Base):
    async def get(self) -> None:
        counters = await self.blocking(self.reader.store.metrics)
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(render_metrics(counters))


class HealthHandler(_Base):
    async def get(self) -> None:
        ok = await self.blocking(self.reader.store.redis.ping)
        self.write_json({"ok": bool(ok)})


def make_app(
    store: StateStore, flower_url: str = DEFAULT_FLOWER_URL, *, threads: int = 16
) -> tornado.web.Application:
    reader = DashboardReader(store, flower_url)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dashboard")
    args = {"reader": reader, "pool": pool}
    wid = r"([^/]+)"
    return tornado.web.Application(
        [
            (r"/", PageHandler, args),
            (rf"/workflow/{wid}", PageHandler, args),
            (r"/api/workflows", WorkflowsHandler, args),
            (rf"/api/workflows/{wid}", WorkflowHandler, args),
            (rf"/api/workflows/{wid}/events", EventsHandler, args),
            (r"/metrics", MetricsHandler, args),
            (r"/healthz", HealthHandler, args),
        ],
        compress_response=False,  # a gzip stream would hold server-sent events back
    )


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    flower_url: str = DEFAULT_FLOWER_URL,
    settings: BatonSettings | None = None,
) -> None:
    """Serve the dashboard until interrupted, on the Redis the settings name."""
    from workers.embedded import resolve_redis_url

    settings = settings or get_settings()
    url = resolve_redis_url(settings)
    client = redis.Redis.from_url(url, health_check_interval=30)
    store = StateStore(client, prefix=settings.key_prefix, retention=settings.retention_seconds)
    app = make_app(store, flower_url)

    async def main() -> None:
        server = app.listen(port, address=host, xheaders=False)
        log.info(
            "baton dashboard on http://%s:%d (redis %s, prefix %s)",
            host,
            port,
            redact(url),
            settings.key_prefix,
        )
        try:
            await asyncio.Event().wait()
        finally:
            server.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
