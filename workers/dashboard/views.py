"""The dashboard's documents: workflows and their steps, read from the state store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from orchestration.definition.plan import PlannedBranch, PlannedGroup, PlannedMap, PlannedTask
from orchestration.errors import WorkflowNotFound
from orchestration.model import RunningStep, TaskResult, WorkflowStatus, WorkflowStatusReport
from orchestration.model.names import RUN_STARTS, Event
from orchestration.state.decode import step_sort_key
from orchestration.state.fields import WaitRecord as W
from orchestration.state.reads import StateReader

DEFAULT_FLOWER_URL = "http://localhost:5555"


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
        "parent": report.parent,
        "parent_step": report.parent_step,
        "children": report.children,
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
    """Builds the JSON documents the page shows from one ``StateReader``."""

    def __init__(self, store: StateReader, flower_url: str = DEFAULT_FLOWER_URL) -> None:
        self.store = store
        self.flower_url = flower_url

    def workflows(self, limit: int = 50) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        rows = []
        for wid in self.store.index.list_ids(limit):
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
        live = self.store.live(workflow_id) if running else {}
        throttled = {t.step: t for t in report.throttled_steps}
        parked = self.store.parked(workflow_id) if report.status != "completed" else {}
        compensated = set(ctx.compensation.compensated) if ctx.compensation else set()

        # Attempts and retries of the current run: history since it (re)started.
        history = ctx.execution_history
        since = max(
            (i for i, h in enumerate(history) if h.event in RUN_STARTS),
            default=0,
        )
        retries: dict[str, int] = {}
        last_error: dict[str, str] = {}
        past: dict[str, Any] = {}  # step_completed/failed lines: a result restored away
        for i, h in enumerate(history):
            if not h.step:
                continue
            if h.event == Event.STEP_RETRY and i >= since:
                retries[h.step] = max(retries.get(h.step, 0), h.attempt or 1)
                if h.error:
                    last_error[h.step] = h.error
            elif h.event in (Event.STEP_COMPLETED, Event.STEP_FAILED):
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
                    live=live.get(sid),  # its latest step.emit and step.progress
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
            elif sid in parked and parked[sid].get(W.RUN) == ctx.run:
                w = parked[sid]
                doc.update(
                    status="waiting",
                    started_at=w.get(W.SINCE),
                    wait={
                        "name": w.get(W.NAME) or None,
                        "schema": task.parameters.get("payload_schema") or {},
                        "since": w.get(W.SINCE),
                        "until": w[W.DUE_MS] / 1000 if w.get(W.DUE_MS) else None,
                    },
                )
            elif sid in throttled:
                t = throttled[sid]
                doc.update(
                    status="throttled",
                    throttled={"limit": t.limit, "why": t.why, "until": t.until},
                )
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
            elif isinstance(node, PlannedMap):
                nodes.append(self._map_doc(node, ctx.task_results, report))
            elif isinstance(node, PlannedBranch):
                nodes.append(self._branch_doc(node, plan.tasks, ctx.task_results, step_doc))
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
    def _branch_doc(
        node: PlannedBranch,
        tasks: dict[str, PlannedTask],
        results: dict[str, TaskResult],
        step_doc: Callable[[PlannedTask], dict[str, Any]],
    ) -> dict[str, Any]:
        choice = results.get(node.step_id)
        decided = choice.result if choice is not None and isinstance(choice.result, dict) else {}
        ways: list[dict[str, Any]] = [
            {
                "name": w.name,
                "taken": decided.get("taken") == w.name if decided else None,
                "steps": [step_doc(tasks[sid]) for sid in w.steps],
            }
            for w in node.ways
        ]
        steps = [st for w in ways if w["taken"] for st in w["steps"]]
        if not decided:
            status = "pending"
        elif any(st["status"] == "failed" for st in steps):
            status = "failed"
        elif all(st["status"] == "completed" for st in steps):
            status = "completed"
        else:
            status = "running"
        return {
            "kind": "branch",
            "step_id": node.step_id,
            "on": node.on,
            "value": decided.get("value"),
            "taken": decided.get("taken"),
            "status": status,
            "ways": ways,
        }

    @staticmethod
    def _map_doc(
        node: PlannedMap, results: dict[str, TaskResult], report: WorkflowStatusReport
    ) -> dict[str, Any]:
        result = results.get(node.step_id)
        counts = next((m for m in report.maps if m.step == node.step_id), None)
        batches = sum(r.step_id == node.step_id for r in report.running_steps)  # (one a batch)
        if result is not None:
            status = result.status.value
        elif batches or (counts is not None and counts.total is not None):
            status = "running"
        else:
            status = "pending"
        return {
            "kind": "map",
            "step_id": node.step_id,
            "agent_id": node.member.agent_id,
            "task_type": node.member.task_type,
            "over": node.over,
            "output_key": node.output_key,
            "aggregate": node.aggregate,
            "batch_size": node.batch_size,
            "max_concurrency": node.max_concurrency,
            "status": status,
            "done": counts.done if counts else 0,
            "failed": counts.failed if counts else 0,
            "total": counts.total if counts else None,
            "running": batches,
            "error": result.error if result is not None else None,
            "finished_at": result.finished_at if result is not None else None,
        }

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
