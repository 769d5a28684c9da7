"""A plan segment in, a Celery canvas of references out.

Consecutive task steps become one ``chain``; a parallel group becomes
``chord(group(...), baton.aggregate)``, a branch sequence inside it a nested chain.
Every signature is immutable and carries ``(workflow_id, step_id, run)`` only.

Why segments instead of one canvas for the whole workflow: when chords are chained,
Celery embeds the whole remaining canvas in every header message, so messages grow
with the workflow. Here the step that ends a segment dispatches the next one after it
commits, and no message ever holds more than its own segment's references.

Canvases are frozen before they are sent so that their task ids are known first: the
committing step records them (for ``cancel_workflow`` to revoke) in the same script.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery, chain, chord, group
from celery.canvas import Signature, _chain, _chord

from agents.base import agent_queue
from orchestration.plan import Plan, PlannedGroup, PlannedTask

CONTROL_QUEUE = "baton.control"
AGGREGATE_TASK = "baton.aggregate"
DISPATCH_TASK = "baton.dispatch"
FINISH_FAILURE_TASK = "baton.finish_failure"


def _task_sig(app: Celery, workflow_id: str, task: PlannedTask, run: int, **kw: Any) -> Signature:
    options: dict[str, Any] = {"queue": agent_queue(task.agent_id)}
    if task.timeout:
        options["soft_time_limit"] = task.timeout
    # Outside a chord nothing reads a step's Celery result (the state store holds it),
    # so none is written; a chord's members keep theirs, Celery counts the chord by them.
    options["ignore_result"] = task.group is None
    return app.signature(
        task.celery_name, args=(workflow_id, task.step_id, run), immutable=True, **options, **kw
    )


def group_signature(
    app: Celery, plan: Plan, workflow_id: str, node: PlannedGroup, run: int
) -> Signature:
    branches = []
    for branch in node.branches:
        sigs = [_task_sig(app, workflow_id, plan.tasks[sid], run) for sid in branch]
        branches.append(sigs[0] if len(sigs) == 1 else chain(*sigs))
    body = app.signature(
        AGGREGATE_TASK, args=(workflow_id, node.step_id, run), immutable=True, queue=CONTROL_QUEUE
    )
    return chord(group(branches), body)


def segment_signature(app: Celery, plan: Plan, workflow_id: str, start: int, run: int) -> Signature:
    seg = plan.segment(start)
    if isinstance(seg, PlannedGroup):
        return group_signature(app, plan, workflow_id, seg, run)
    sigs = [_task_sig(app, workflow_id, t, run) for t in seg]
    return sigs[0] if len(sigs) == 1 else chain(*sigs)


def signature_from(
    app: Celery,
    plan: Plan,
    workflow_id: str,
    step_id: str,
    run: int,
    inserted: Callable[[str], PlannedTask],
) -> Signature:
    """The canvas that goes on from ``step_id``: a static segment, or an inserted step."""
    node = next((n for n in plan.nodes if n.step_id == step_id), None)
    if node is not None:
        return segment_signature(app, plan, workflow_id, node.index, run)
    return _task_sig(app, workflow_id, inserted(step_id), run)


def compensation_signature(
    app: Celery, workflow_id: str, completed: list[PlannedTask], run: int
) -> Signature:
    """Compensations of ``completed`` in reverse order, then ``baton.finish_failure``."""
    sigs = [
        app.signature(
            f"{t.agent_id}.{t.compensation}",
            args=(workflow_id, t.step_id, run),
            kwargs={"compensate": True},
            immutable=True,
            queue=agent_queue(t.agent_id),
            ignore_result=True,
        )
        for t in reversed(completed)
    ]
    finish = app.signature(
        FINISH_FAILURE_TASK,
        args=(workflow_id, run),
        immutable=True,
        queue=CONTROL_QUEUE,
        ignore_result=True,
    )
    return chain(*sigs, finish)


def frozen_ids(sig: Signature) -> list[str]:
    """Freeze ``sig`` (assigning its task ids now) and list every id it will send."""
    sig.freeze()
    return _ids(sig)


def _ids(sig: Signature) -> list[str]:
    if isinstance(sig, _chord):
        return [*_ids(sig.tasks), str(sig.body.id)]
    if isinstance(sig, group | _chain):
        return [i for t in sig.tasks for i in _ids(t)]
    return [str(sig.id)]


def start_signature(app: Celery, plan: Plan, workflow_id: str, run: int) -> Signature:
    """A workflow's first message.

    A chain is published by the client. A group is handed to a worker (``baton.dispatch``):
    publishing a chord's header is the expensive part of fan-out, and a client that
    published it would also subscribe to every member's result.
    """
    if isinstance(plan.segment(0), PlannedGroup):
        return app.signature(
            DISPATCH_TASK,
            args=(workflow_id, plan.nodes[0].step_id, run),
            queue=CONTROL_QUEUE,
            ignore_result=True,
            immutable=True,
        )
    return segment_signature(app, plan, workflow_id, 0, run)
