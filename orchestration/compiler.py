"""A plan segment in, a Celery canvas of references out.

Consecutive task steps become one ``chain``; a parallel group becomes
``chord(group(...), baton.aggregate)``, a branch sequence inside it a nested chain.
Every signature is immutable and carries ``(workflow_id, step_id)`` only.

Why segments instead of one canvas for the whole workflow: when chords are chained,
Celery embeds the whole remaining canvas in every header message, so messages grow
with the workflow. Here the step that ends a segment dispatches the next one after it
commits, and no message ever holds more than its own segment's references.
"""

from __future__ import annotations

from celery import Celery, chain, chord, group
from celery.canvas import Signature

from agents.base import agent_queue
from orchestration.plan import Plan, PlannedGroup, PlannedTask

CONTROL_QUEUE = "baton.control"
AGGREGATE_TASK = "baton.aggregate"
DISPATCH_TASK = "baton.dispatch"


def _task_sig(app: Celery, workflow_id: str, task: PlannedTask) -> Signature:
    # Outside a chord nothing reads a step's Celery result (the state store holds it),
    # so none is written; a chord's members keep theirs, Celery counts the chord by them.
    return app.signature(
        task.celery_name,
        args=(workflow_id, task.step_id),
        immutable=True,
        queue=agent_queue(task.agent_id),
        ignore_result=task.top_level,
    )


def group_signature(app: Celery, plan: Plan, workflow_id: str, node: PlannedGroup) -> Signature:
    branches = []
    for branch in node.branches:
        sigs = [_task_sig(app, workflow_id, plan.tasks[sid]) for sid in branch]
        branches.append(sigs[0] if len(sigs) == 1 else chain(*sigs))
    body = app.signature(
        AGGREGATE_TASK, args=(workflow_id, node.step_id), immutable=True, queue=CONTROL_QUEUE
    )
    return chord(group(branches), body)


def segment_signature(app: Celery, plan: Plan, workflow_id: str, start: int) -> Signature:
    seg = plan.segment(start)
    if isinstance(seg, PlannedGroup):
        return group_signature(app, plan, workflow_id, seg)
    sigs = [_task_sig(app, workflow_id, t) for t in seg]
    return sigs[0] if len(sigs) == 1 else chain(*sigs)


def dispatch(app: Celery, plan: Plan, workflow_id: str, start: int) -> None:
    segment_signature(app, plan, workflow_id, start).apply_async()


def start(app: Celery, plan: Plan, workflow_id: str) -> None:
    """Enqueue a workflow's first segment.

    A chain is published right here. A group is handed to a worker (``baton.dispatch``)
    instead: publishing a chord's header is the expensive part of fan-out, and a client
    that published it would also subscribe to every member's result.
    """
    if isinstance(plan.segment(0), PlannedGroup):
        app.signature(
            DISPATCH_TASK, args=(workflow_id, 0), queue=CONTROL_QUEUE, ignore_result=True
        ).apply_async()
    else:
        dispatch(app, plan, workflow_id, 0)
