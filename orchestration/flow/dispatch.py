"""Sending a workflow on: its first messages, the rest of a big group, and a restart from
the first step that has not completed (resume, retry, the reaper).

Used by the client and by workers alike; it knows the plan (``compiler.py``), the outbox
and the state store, and nothing of agents or worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from celery.canvas import Signature

from orchestration.definition.plan import Plan, PlannedBranch, PlannedGroup, PlannedMap, frontier
from orchestration.flow.compiler import Next, start_messages
from orchestration.flow.outbox import Outbox
from orchestration.model import TaskResult, TaskStatus, WorkflowStatus
from orchestration.model.names import CONTROL_QUEUE, Event, agent_queue
from orchestration.state.commit import CommitRequest
from orchestration.state.scripts import CommitReply, Delivery, Join, Outgoing
from orchestration.state.store import StateStore


@dataclass(frozen=True)
class Sending:
    """What a state change sends: ``nxt``, the messages handed to its script (``first``)
    and those as the script takes them (``outgoing``: ids, and inline, the payloads)."""

    nxt: Next
    first: list[Signature]
    outgoing: Outgoing


@dataclass(frozen=True)
class AllSent:
    """The reply of a change that sent everything it was given or raised (create,
    transition)."""

    delivered: None = None
    aggregate_id: str = ""
    aggregate_message: str = ""


ALL_SENT = AllSent()


class Dispatcher:
    def __init__(self, app: Celery, store: StateStore) -> None:
        self.app = app
        self.store = store
        self.outbox = Outbox(app)

    def first(self, plan: Plan, workflow_id: str) -> Next:
        """What starts a workflow: its first step, or its first group's members."""
        return start_messages(self.app, plan, workflow_id, plan.nodes[0], run=1)

    def prepare(self, nxt: Next, parent_id: str | None = None, *, whole: bool = False) -> Sending:
        """``nxt`` ready for a script to send: its first batch (``whole``: every message,
        as a map's window is sent) and, starting a group, its aggregate to keep."""
        first = list(nxt.sigs) if whole else self.outbox.first_batch(nxt)
        return Sending(nxt, first, self.outbox.outgoing(nxt, parent_id, first))

    def follow(self, reply: Delivery, sending: Sending) -> None:
        """The one place a state change's reply becomes what is sent next: what the script
        took is published through Celery on another broker (with the aggregate it sent)
        or announced to the publish hooks; then a big group's later batches go, a batch
        per script. Every sending caller (steps, groups, maps, waits, branches,
        sub-workflows, signals, the client) ends here."""
        nxt, n = sending.nxt, reply.delivered
        first = sending.first if n is None else sending.first[:n]
        if reply.aggregate_id and nxt.aggregate is not None and not self.outbox.inline:
            first = [*first, nxt.aggregate.set(task_id=reply.aggregate_id)]
        self.outbox.published(first)
        if reply.aggregate_message:
            self.outbox.announce(reply.aggregate_message)
        if n is None:
            self._send_later(nxt)

    def commit(self, request: CommitRequest, nxt: Next) -> CommitReply:
        """Commit ``request`` with what follows it (``nxt``) in one script, then send what
        the script could not. A step that ends a branch of a group joins it."""
        if nxt.group and nxt.joins:
            request = request.model_copy(
                update={"join": Join(group=nxt.group, total=len(nxt.ends))}
            )
        sending = self.prepare(nxt, request.task_id or None)
        reply = self.store.commit(request, sending.outgoing)
        self.follow(reply, sending)
        return reply

    def _send_later(self, nxt: Next) -> None:
        for batch in self.outbox.later_batches(nxt):
            reply = self.store.send(
                nxt.workflow_id, nxt.run, self.outbox.batch(batch), hold_at=nxt.group
            )
            if not reply.sent:  # stopped meanwhile (paused, cancelled): resume sends the rest
                return
            self.outbox.published(batch)

    def next_step(self, workflow_id: str) -> str | None:
        """The first step (top-level or inserted) that has not completed."""
        return self._frontier(workflow_id)[0]

    def _frontier(self, workflow_id: str) -> tuple[str | None, dict[str, TaskResult]]:
        """``next_step``, and the results it was found from."""
        plan = self.store.plan(workflow_id)
        results = self.store.results(workflow_id)
        done = {s for s, r in results.items() if r.status == TaskStatus.COMPLETED}
        taken = {  # the way each branch took
            b.step_id: list(r.result.get("steps", []))
            for b in plan.nodes
            if isinstance(b, PlannedBranch) and (r := results.get(b.step_id)) is not None
            and isinstance(r.result, dict)
        }  # fmt: skip
        return frontier(plan, done, self.store.inserted(workflow_id), taken), results

    def queues_for(self, workflow_id: str, step_id: str) -> list[str]:
        """The queues the messages for ``step_id`` go to (a group's members and callback)."""
        plan = self.store.plan(workflow_id)
        node = next((n for n in plan.nodes if n.step_id == step_id), None)
        if isinstance(node, PlannedGroup):
            agents = {plan.tasks[m].agent_id for m in node.member_ids}
            return [*(agent_queue(a) for a in sorted(agents)), CONTROL_QUEUE]
        if isinstance(node, PlannedMap):
            return [agent_queue(node.member.agent_id), CONTROL_QUEUE]
        if isinstance(node, PlannedBranch):
            return [CONTROL_QUEUE]
        return [agent_queue(self.store.task(workflow_id, step_id).agent_id)]

    def retry(self, workflow_id: str) -> int:
        """Restart a failed workflow from its last good checkpoint (``retry_workflow``);
        its new run."""
        restored = self.store.restore(
            workflow_id,
            self.store.get_status(workflow_id).version,
            [WorkflowStatus.FAILED],
            WorkflowStatus.RUNNING,
            event=Event.WORKFLOW_RETRIED,
            bump_run=True,
            archive_failed=True,
        )
        self.send_on(workflow_id, restored.run)
        return restored.run

    def send_on(self, workflow_id: str, run: int, *, stalled: bool = False) -> str | None:
        """Send the workflow on from the first step that has not completed (resume, retry,
        the reaper); what was outstanding before is superseded (lost, or dropped on
        arrival). ``stalled``: nothing has run for a while (the reaper), so a map's
        batches taken and never committed are lost. Returns that step, or None if every
        step has completed."""
        nxt, results = self._frontier(workflow_id)
        if nxt is None:
            return None
        plan = self.store.plan(workflow_id)
        node = next((n for n in plan.nodes if n.step_id == nxt), None)
        what = start_messages(
            self.app, plan, workflow_id, node or self.store.task(workflow_id, nxt), run, results,
            reset=stalled,
        )  # fmt: skip
        sending = self.prepare(what)
        reply = self.store.send(workflow_id, run, sending.outgoing, replace=True, ends=what.ends)
        self.follow(reply, sending)
        return nxt
