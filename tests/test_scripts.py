"""The contract of each Lua script (``orchestration/state/lua``): every reply it can give, refusals
included, as ``orchestration/state/scripts.py`` decodes it, and the state each reply leaves.

The scripts run on the session's private redis-server, through :class:`StateStore`'s typed
wrappers (or ``Scripts.call`` where a wrapper turns a reply into an exception); no Celery:
the messages a script sends are plain payloads pushed onto a list of the test's own.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from enum import StrEnum
from typing import Any
from uuid import uuid4

import pytest
import redis

from orchestration.client.embedded import RedisServer
from orchestration.definition.plan import Plan, PlannedGroup, PlannedMap, PlannedTask
from orchestration.errors import StateStoreError, WorkflowNotFound, WorkflowStateError
from orchestration.model import CompensationOutcome, RunningStep, TaskResult, TaskStatus, utcnow
from orchestration.model import WorkflowStatus as S
from orchestration.model.names import Event
from orchestration.state.commit import CommitRequest
from orchestration.state.connection import text
from orchestration.state.decode import StepState
from orchestration.state.fields import MapField, MetaField, SignalField, StepField, VersionItem
from orchestration.state.maps import ItemResult, MapStore
from orchestration.state.scripts import (
    NOTHING,
    BeginReply,
    CommitReply,
    CreateReply,
    CreateSpec,
    Join,
    LeaseReply,
    Outcome,
    Outgoing,
    Push,
    RestoreReply,
    RestoreSpec,
    SendReply,
    SignalSpec,
    Spec,
    TransitionReply,
    TransitionSpec,
)
from orchestration.state.store import StateStore

ID = "wf-1"


def _task(step_id: str, index: int, group: str | None = None) -> PlannedTask:
    return PlannedTask(step_id=step_id, index=index, agent_id="a", task_type="t",
                       output_key=f"out_{step_id}", group=group)  # fmt: skip


PLAN = Plan(name="t", nodes=[_task("step_1", 0), _task("step_2", 1)],
            tasks={t: _task(t, i) for i, t in enumerate(["step_1", "step_2"])})  # fmt: skip
# A workflow's status and a call's run under which a script does nothing, and its reply:
# no workflow, a run other than the workflow's own (stale), or not running.
NOT_RUNNING_IN_ITS_RUN = pytest.mark.parametrize(
    ("status", "run", "expected"),
    [("missing", 1, "missing"), ("running", 2, "stale"), ("created", 1, "created"),
     ("cancelled", 1, "cancelled"), ("paused", 1, "paused")],
)  # fmt: skip
BRANCHES = ["step_1.1", "step_1.2"]
GROUP_PLAN = Plan(
    name="g",
    nodes=[PlannedGroup(step_id="step_1", index=0, branches=[[b] for b in BRANCHES],
                        output_key="g", aggregate="summary")],
    tasks={b: _task(b, 0, group="step_1") for b in BRANCHES},
)  # fmt: skip


class Workflow:
    """One workflow id under a key prefix of its own, and the calls the tests repeat."""

    def __init__(self, store: StateStore, queue: str) -> None:
        self.store, self.queue = store, queue

    def msg(self, *payloads: str, ids: list[str] | None = None, **kw: Any) -> Outgoing:
        """Messages LPUSHed onto the test's queue, tracked as ``ids`` (default: payloads)."""
        pushes = [Push("l", self.queue, p) for p in payloads]
        return Outgoing(ids=list(payloads) if ids is None else ids, pushes=pushes, **kw)

    def group(self) -> Outgoing:
        """GROUP_PLAN's group: its two branches now, its aggregate (id agg) kept for its end."""
        return self.msg("b1", "b2", group="step_1", aggregate=self.msg("summary", ids=["agg"]))

    def queued(self) -> list[str]:
        """The payloads on the queue, oldest first."""
        return [text(m) for m in reversed(self.store.redis.lrange(self.queue, 0, -1))]

    def meta(self, name: str) -> str | None:
        raw = self.store.redis.hget(self.store.keys(ID).meta, name)
        return None if raw is None else text(raw)

    def events(self) -> list[str]:
        return [h.event for h in self.store.history(ID)]

    def make(self, status: str, plan: Plan = PLAN) -> None:
        """The workflow in ``status`` (``missing``: none); once started, it has sent "first"
        (task id t0)."""
        if status == "missing":
            return
        start = None if status == "created" else self.msg("first", ids=["t0"])
        assert self.store.create(ID, plan, start=start)
        if status in ("paused", "cancelled"):
            event = Event.WORKFLOW_PAUSED if status == "paused" else Event.WORKFLOW_CANCELLED
            self.store.transition(ID, [S.RUNNING], S(status), event=event)

    def begin(
        self, step: str, *, owner: str = "o1", run: int = 1, lease: float = 60.0, **kw: Any
    ) -> StepState:
        running = RunningStep(step_id=step, agent_id="a", task_type="t", started_at=utcnow(),
                              worker=f"w-{owner}")  # fmt: skip
        return self.store.begin_step(ID, running, run, owner=owner, lease_seconds=lease, **kw)

    def commit(
        self,
        step: str,
        *,
        owner: str = "o1",
        run: int = 1,
        outcome: Outcome = "continue",
        value: Any = None,
        **kw: Any,
    ) -> CommitReply:
        """Commit ``step``'s output (``{"from": step}`` by default); a ``fail`` outcome
        commits a failed result."""
        value = {"from": step} if value is None else value
        ok = outcome != "fail"
        result = TaskResult(
            task_id=f"task-{step}", agent_id="a", result=value, step_id=step, task_type="t",
            status=TaskStatus.COMPLETED if ok else TaskStatus.FAILED,
            error=None if ok else "boom", output_key=f"out_{step}",
        )  # fmt: skip
        kw.setdefault("advance", "." not in step)
        send = kw.pop("send", NOTHING)
        request = CommitRequest(workflow_id=ID, result=result, node=step, run=run,
                                outcome=outcome, output_json=json.dumps(value), owner=owner,
                                **kw)  # fmt: skip
        return self.store.commit(request, send)


@pytest.fixture
def wf(redis_server: RedisServer) -> Iterator[Workflow]:
    client = redis.Redis.from_url(redis_server.url)
    prefix = f"scripts-{uuid4().hex[:6]}"
    yield Workflow(StateStore(client, prefix=prefix, retention=0), f"{prefix}:queue")
    client.close()


# --------------------------------------------------------------------------- create


@pytest.mark.parametrize("start", [False, True])
def test_create_stores_a_new_workflow_as_created_or_started_with_its_first_messages(
    wf: Workflow, start: bool
) -> None:
    assert wf.store.create(ID, PLAN, start=wf.msg("first", ids=["t0"]) if start else None) is True
    ctx = wf.store.get_context(ID)
    assert (ctx.version, ctx.run, ctx.current_step, ctx.total_steps) == (0, 1, 0, 2)
    assert wf.store.index.list_ids() == [ID]
    if start:
        assert (ctx.status, wf.events()) == (S.RUNNING, [Event.WORKFLOW_CREATED,
                                                        Event.WORKFLOW_STARTED])  # fmt: skip
        assert (wf.queued(), wf.store.outstanding(ID)) == (["first"], {"t0"})
    else:
        assert (ctx.status, wf.events()) == (S.CREATED, [Event.WORKFLOW_CREATED])
        assert (wf.queued(), wf.store.outstanding(ID)) == ([], set())
    assert list(wf.store.index.active()) == ([ID] if start else [])


def test_create_of_an_existing_id_returns_false_and_writes_nothing(wf: Workflow) -> None:
    wf.make("running")
    assert wf.store.create(ID, PLAN, start=wf.msg("again", ids=["t9"])) is False  # a retry
    other = PLAN.model_copy(update={"name": "other"})
    spec = CreateSpec(workflow_id=ID, name="other", total_steps=2, score=0.0)
    raw = wf.store.scripts.call("create", wf.store.keys(ID), spec, other.model_dump_json(), "{}")
    assert CreateReply.decode(raw) == CreateReply(False, conflict=True)
    with pytest.raises(WorkflowStateError, match="exists with a different definition"):
        wf.store.create(ID, other, start=wf.msg("again", ids=["t9"]))
    assert Plan.model_validate_json(wf.store.redis.get(wf.store.keys(ID).plan) or "").name == "t"
    assert (wf.queued(), wf.store.outstanding(ID)) == (["first"], {"t0"})
    assert wf.events() == [Event.WORKFLOW_CREATED, Event.WORKFLOW_STARTED]


# --------------------------------------------------------------------------- transition


def test_resume_reports_where_the_pause_stopped_a_step_bumps_the_run_and_clears_it(
    wf: Workflow,
) -> None:
    wf.make("paused")
    assert wf.begin("step_2").status == "paused"  # records paused_at
    reply = wf.store.transition(ID, [S.PAUSED], S.RUNNING, event=Event.WORKFLOW_RESUMED,
                                bump_run=True, clear_paused=True)  # fmt: skip
    assert reply == TransitionReply("ok", "paused", 2, "step_2", [])
    assert (wf.meta("run"), wf.meta("paused_at"), wf.meta("status")) == ("2", None, "running")


def test_cancel_replies_with_the_outstanding_task_ids_and_forgets_them(wf: Workflow) -> None:
    wf.make("running")
    reply = wf.store.transition(ID, [S.RUNNING], S.CANCELLED, event=Event.WORKFLOW_CANCELLED,
                                send=wf.msg(ids=["t1"]))  # fmt: skip
    reply = replace(reply, outstanding=sorted(reply.outstanding))  # a set's members
    assert reply == TransitionReply("ok", "running", 1, None, ["t0", "t1"])
    assert (wf.store.status_of(ID), wf.store.outstanding(ID)) == (S.CANCELLED, set())
    assert wf.meta("finished_at") is not None
    assert wf.events()[-1] == Event.WORKFLOW_CANCELLED


# Status-checked scripts: their refusals as decoded, and the error the wrapper raises.
STATUS_CHECKED: dict[str, tuple[Spec, type[TransitionReply | RestoreReply], Callable[..., Any]]] = {
    "transition": (
        TransitionSpec(from_=["running"], to="paused", event=Event.WORKFLOW_PAUSED),
        TransitionReply,
        lambda s: s.transition(ID, [S.RUNNING], S.PAUSED, event=Event.WORKFLOW_PAUSED),
    ),
    "restore": (
        RestoreSpec(from_=["running"], to="paused", target=0, event=Event.ROLLED_BACK),
        RestoreReply,
        lambda s: s.restore(ID, 0, [S.RUNNING], S.PAUSED, event=Event.ROLLED_BACK),
    ),
}


@pytest.mark.parametrize("script", STATUS_CHECKED)
@pytest.mark.parametrize(
    ("status", "state", "error", "message"),
    [("missing", "missing", WorkflowNotFound, "not found"),
     ("created", "refused", WorkflowStateError, "is created, not running: cannot make it paused")],
)  # fmt: skip
def test_a_status_checked_script_replies_missing_or_refused_and_changes_nothing(
    wf: Workflow, script: str, status: str, state: str, error: type[Exception], message: str
) -> None:
    spec, reply, call = STATUS_CHECKED[script]
    wf.make(status)
    raw = wf.store.scripts.call(script, wf.store.keys(ID), spec)
    refused_by = "" if status == "missing" else status
    assert reply.decode(raw) == reply(state, refused_by)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        call(wf.store)
    assert wf.meta("status") == (None if status == "missing" else "created")
    assert wf.events() == ([] if status == "missing" else [Event.WORKFLOW_CREATED])


# --------------------------------------------------------------------------- restore


def test_restore_archives_later_writes_as_a_new_version_in_a_new_run(wf: Workflow) -> None:
    wf.make("running")
    wf.commit("step_1")
    wf.commit("step_2")
    reply = wf.store.restore(ID, 1, [S.RUNNING], S.RUNNING, event=Event.STATE_RESTORED,
                             bump_run=True)  # fmt: skip
    assert reply == RestoreReply("ok", "running", version=3, run=2)
    ctx = wf.store.get_context(ID)
    assert (ctx.version, ctx.run, ctx.current_step) == (3, 2, 1)
    assert (ctx.shared_data, list(ctx.task_results)) == ({"out_step_1": {"from": "step_1"}},
                                                         ["step_1"])  # fmt: skip
    last = ctx.execution_history[-1]
    assert (last.event, last.version, last.restored_to) == (
        Event.STATE_RESTORED, 3, 1)  # fmt: skip
    assert sorted(last.changed or []) == ["data:out_step_2", "result:step_2"]
    assert "out_step_2" in wf.store.get_context(ID, version=2).shared_data  # archived, readable


@pytest.mark.parametrize("target", [3, -1])
def test_restore_to_a_version_that_is_no_checkpoint_replies_invalid_and_changes_nothing(
    wf: Workflow, target: int
) -> None:
    wf.make("running")
    wf.commit("step_1")
    wf.commit("step_2")  # versions 0..2
    events = wf.events()
    spec = RestoreSpec(from_=["running"], to="paused", target=target, event=Event.ROLLED_BACK)
    raw = wf.store.scripts.call("restore", wf.store.keys(ID), spec)
    assert RestoreReply.decode(raw) == RestoreReply("invalid", "", version=2)
    with pytest.raises(WorkflowStateError, match=f"has checkpoints 0..2, not {target}"):
        wf.store.restore(ID, target, [S.RUNNING], S.PAUSED, event=Event.ROLLED_BACK)
    assert (wf.meta("status"), wf.meta("version"), wf.events()) == ("running", "2", events)


# --------------------------------------------------------------------------- begin


def test_begin_runs_the_step_with_the_state_it_may_see_and_counts_attempts(wf: Workflow) -> None:
    wf.make("running")
    wf.commit("step_1")
    state = wf.begin("step_2", results=["step_1"])
    assert (state.status, state.attempt) == ("running", 1)
    assert state.shared_data == {"out_step_1": {"from": "step_1"}}
    assert list(state.results) == ["step_1"]
    assert state.results["step_1"].result == {"from": "step_1"}  # put back from shared_data
    assert wf.store.live_leases(ID) == ["step_2"]
    assert [r.step_id for r in wf.store.get_status(ID).running_steps] == ["step_2"]
    assert wf.begin("step_2").attempt == 2  # the same execution again (a Celery retry)


def test_begin_takes_over_a_lapsed_lease_and_records_the_lost_attempt(wf: Workflow) -> None:
    wf.make("running")
    wf.begin("step_1", owner="o1", lease=0)  # its worker died: nobody renews it
    state = wf.begin("step_1", owner="o2")
    assert (state.status, state.attempt) == ("running", 2)
    assert wf.events()[-1] == Event.ATTEMPT_LOST
    assert wf.store.lease(ID, "step_1", "o1", 60) is False  # o2's now


def test_begin_defers_a_redelivery_while_another_owner_holds_the_lease(wf: Workflow) -> None:
    wf.make("running")
    wf.begin("step_1", owner="o1")
    assert wf.begin("step_1", owner="o2") == StepState("leased", {}, {}, 0)
    assert wf.begin("step_1", owner="o2").status == "leased"
    assert wf.events().count(Event.REDELIVERY_DEFERRED) == 1  # recorded once
    assert wf.store.lease(ID, "step_1", "o1", 60) is True  # still o1's


def test_begin_of_a_committed_step_replies_committed_and_drops_its_message(wf: Workflow) -> None:
    wf.make("running")
    wf.commit("step_1")
    assert wf.begin("step_1", task_id="t0") == StepState("committed", {}, {}, 0)
    assert wf.store.outstanding(ID) == set()


@NOT_RUNNING_IN_ITS_RUN
def test_begin_does_not_run_the_step_unless_running_in_its_run(
    wf: Workflow, status: str, run: int, expected: str
) -> None:
    wf.make(status)
    assert wf.begin("step_1", run=run) == StepState(expected, {}, {}, 0)
    assert (wf.store.live_leases(ID), wf.store.redis.exists(wf.store.keys(ID).running)) == ([], 0)
    assert wf.meta("paused_at") == ("step_1" if expected == "paused" else None)


# --------------------------------------------------------------------------- commit


@pytest.mark.parametrize(
    ("outcome", "status", "event"),
    [("continue", S.RUNNING, Event.STEP_COMPLETED), ("complete", S.COMPLETED,
     Event.WORKFLOW_COMPLETED), ("fail", S.COMPENSATING, Event.STEP_FAILED)],
)  # fmt: skip
def test_commit_writes_the_result_as_a_new_version_and_sets_the_status(
    wf: Workflow, outcome: Outcome, status: S, event: Event
) -> None:
    wf.make("running")
    wf.begin("step_1")
    reply = wf.commit("step_1", outcome=outcome, task_id="t0", send=wf.msg("next", ids=["t1"]))
    assert reply == CommitReply("committed", 1, status)
    ctx = wf.store.get_context(ID)
    assert (ctx.status, ctx.version, ctx.execution_history[-1].event) == (status, 1, event)
    assert ctx.task_results["step_1"].status == ("failed" if outcome == "fail" else "completed")
    assert ctx.shared_data == ({} if outcome == "fail" else {"out_step_1": {"from": "step_1"}})
    assert (wf.store.live_leases(ID), wf.store.get_status(ID).running_steps) == ([], [])
    sent = status == S.RUNNING  # the next message goes only while the workflow runs
    assert wf.queued() == (["first", "next"] if sent else ["first"])
    assert wf.store.outstanding(ID) == ({"t1"} if sent else set())
    assert (ID in wf.store.index.active()) == (status != S.COMPLETED)


def test_a_replayed_commit_of_the_same_owner_replies_committed_and_writes_nothing(
    wf: Workflow,
) -> None:
    wf.make("running")
    first = wf.commit("step_1", owner="o1")
    events = wf.events()
    assert wf.commit("step_1", owner="o1") == first == CommitReply("committed", 1, "running")
    assert (wf.events(), wf.meta("version")) == (events, "1")


@pytest.mark.parametrize("outcome", ["complete", "fail"])
def test_a_replayed_commit_that_ended_the_workflow_replies_committed(
    wf: Workflow, outcome: Outcome
) -> None:
    wf.make("running")
    first = wf.commit("step_1", owner="o1", outcome=outcome)
    events = wf.events()
    assert wf.commit("step_1", owner="o1", outcome=outcome) == first
    assert wf.events() == events


def test_a_commit_of_a_step_another_owner_committed_is_a_refused_duplicate(wf: Workflow) -> None:
    wf.make("running")
    wf.commit("step_1", owner="o1")
    assert wf.commit("step_1", owner="o2", value="other") == CommitReply("duplicate", 1, "running")
    ctx = wf.store.get_context(ID)
    assert (ctx.version, ctx.shared_data) == (1, {"out_step_1": {"from": "step_1"}})
    assert (ctx.execution_history[-1].event, ctx.execution_history[-1].status) == (
        Event.COMMIT_REFUSED, "duplicate")  # fmt: skip


@pytest.mark.parametrize(
    ("status", "run", "expected"),
    [("missing", 1, CommitReply("missing", 0, "")),
     ("created", 1, CommitReply("not_running", 0, "created")),
     ("cancelled", 1, CommitReply("not_running", 0, "cancelled")),
     ("running", 2, CommitReply("stale", 0, "running"))],
)  # fmt: skip
def test_commit_is_refused_unless_running_in_its_run(
    wf: Workflow, status: str, run: int, expected: CommitReply
) -> None:
    wf.make(status)
    assert wf.commit("step_1", run=run, task_id="t0") == expected
    assert wf.store.results(ID) == {}
    assert wf.store.redis.hgetall(wf.store.keys(ID).data) == {}
    assert "t0" not in wf.store.outstanding(ID)  # the refused message is accounted for
    recorded = [] if status == "missing" else [(Event.COMMIT_REFUSED, expected.state)]
    assert [(h.event, h.status) for h in wf.store.history(ID)[-1:]] == recorded


def test_the_commit_that_ends_a_groups_last_branch_sends_its_aggregate(wf: Workflow) -> None:
    wf.make("running", GROUP_PLAN)
    assert wf.store.send(ID, 1, wf.group(), ends=BRANCHES) == SendReply("ok")
    assert wf.queued() == ["first", "b1", "b2"]  # the aggregate is held back
    join = Join(group="step_1", total=2)
    assert wf.commit("step_1.1", join=join) == CommitReply("committed", 1, "running")
    assert "agg" not in wf.store.outstanding(ID)
    assert wf.commit("step_1.2", join=join) == CommitReply(
        "committed", 2, "running", "agg", "summary")  # fmt: skip
    assert wf.queued() == ["first", "b1", "b2", "summary"]
    assert "agg" in wf.store.outstanding(ID)


# --------------------------------------------------------------------------- lease


def test_lease_renews_then_releases_a_lease_its_owner_holds(wf: Workflow) -> None:
    wf.make("running")
    wf.begin("step_1", owner="o1", lease=0)
    assert wf.store.live_leases(ID) == []  # lapsed (nobody has taken it over yet)
    assert wf.store.lease(ID, "step_1", "o1", 60) is True
    assert wf.store.live_leases(ID) == ["step_1"]
    assert wf.store.lease(ID, "step_1", "o1", 60, release=True) is True
    assert (wf.store.live_leases(ID), wf.store.get_status(ID).running_steps) == ([], [])
    assert wf.begin("step_1", owner="o2").status == "running"  # free at once
    assert Event.ATTEMPT_LOST not in wf.events()  # released, not lost


def test_a_lease_released_uncounted_takes_back_its_attempt(wf: Workflow) -> None:
    # (A rate-limited call that missed its turn never started: not one of its attempts.)
    wf.make("running")
    assert wf.begin("step_1", owner="o1").attempt == 1
    assert wf.store.lease(ID, "step_1", "o1", 0, release=True, uncount=True) is True
    assert wf.begin("step_1", owner="o2").attempt == 1


def test_leases_renew_many_in_one_round_trip_each_saying_whether_it_is_held(
    wf: Workflow,
) -> None:
    wf.make("running")
    wf.begin("step_1", owner="o1", lease=0)
    wf.begin("step_2", owner="o2", lease=0)
    held = [(ID, "step_1", "o1"), (ID, "step_2", "not-o2"), (ID, "step_3", "o3")]
    assert wf.store.renew_leases(held, 60) == [True, False, False]
    assert wf.store.live_leases(ID) == ["step_1"]


@pytest.mark.parametrize("lease", ["another owner's", "no", "a released"])
def test_lease_replies_false_to_an_execution_that_does_not_hold_it(
    wf: Workflow, lease: str
) -> None:
    wf.make("running")
    if lease != "no":
        wf.begin("step_1", owner="o2" if lease == "another owner's" else "o1")
    if lease == "a released":
        wf.store.lease(ID, "step_1", "o1", 60, release=True)
    assert wf.store.lease(ID, "step_1", "o1", 60) is False
    assert wf.store.lease(ID, "step_1", "o1", 60, release=True) is False
    assert wf.store.live_leases(ID) == (["step_1"] if lease == "another owner's" else [])


# --------------------------------------------------------------------------- send


def test_send_sends_and_tracks_messages_for_the_current_run(wf: Workflow) -> None:
    wf.make("running")
    assert wf.store.send(ID, 1, wf.msg("again", ids=["t1"]), replace=True) == SendReply("ok")
    assert (wf.queued(), wf.store.outstanding(ID)) == (["first", "again"], {"t1"})  # t0 replaced
    assert wf.store.send(ID, 1, wf.msg("more", ids=["t2"])) == SendReply("ok")
    assert wf.store.outstanding(ID) == {"t1", "t2"}


def test_send_of_a_group_whose_branches_all_ended_sends_its_aggregate_too(wf: Workflow) -> None:
    wf.make("running", GROUP_PLAN)
    for branch in BRANCHES:
        wf.commit(branch)
    assert wf.store.send(ID, 1, wf.group(), ends=BRANCHES) == SendReply("ok", "agg", "summary")
    assert wf.queued() == ["first", "b1", "b2", "summary"]
    assert wf.store.outstanding(ID) == {"t0", "b1", "b2", "agg"}


@NOT_RUNNING_IN_ITS_RUN
def test_send_sends_nothing_unless_running_in_its_run(
    wf: Workflow, status: str, run: int, expected: str
) -> None:
    wf.make(status)
    before = (wf.queued(), wf.store.outstanding(ID))
    reply = wf.store.send(ID, run, wf.msg("late", ids=["t9"]), hold_at="step_2")
    assert reply == SendReply(expected) and not reply.sent
    assert (wf.queued(), wf.store.outstanding(ID)) == before
    # Paused: where resume is to go on from is recorded (once: the first hold wins).
    assert wf.meta("paused_at") == ("step_2" if expected == "paused" else None)
    wf.store.send(ID, run, wf.msg("later"), hold_at="step_1")
    assert wf.meta("paused_at") == ("step_2" if expected == "paused" else None)


# --------------------------------------------------------------------------- decoders


@pytest.mark.parametrize(
    ("decoder", "raw"),
    [(TransitionReply, [b"ok", b"running", 1]), (TransitionReply, [b"missing"]),
     (TransitionReply, [b"done", b"running", 1, b""]), (RestoreReply, [b"ok", b"running", 1]),
     (RestoreReply, [b"refused", b"paused", 1]), (BeginReply, [b"running", 1, []]),
     (BeginReply, [b"running"]), (CommitReply, [b"committed"]),
     (CommitReply, [b"done", 1, b"running", b"", b""]), (SendReply, [b"ok", b""]),
     *((d, raw) for d in (CreateReply, LeaseReply) for raw in ([b"missing", b""], b"0", 3)),
     *((d, 1) for d in (TransitionReply, RestoreReply, BeginReply, CommitReply, SendReply))],
)  # fmt: skip
def test_a_reply_decoder_refuses_a_reply_its_script_never_gives(decoder: Any, raw: Any) -> None:
    with pytest.raises(StateStoreError, match="not a reply it gives"):
        decoder.decode(raw)


# --------------------------------------------------------------------------- the fields


def _kind(hash_name: str, field: str) -> StrEnum | None:
    """The name ``fields.py`` gives a field of one of a workflow's hashes (None: none)."""
    if hash_name == "meta":
        return MetaField(field) if field in set(MetaField) else None
    if hash_name == "maps":
        parsed = MapField.parse_map(field)
        return parsed[0] if parsed else None
    kinds = {"steps": StepField, "signals": SignalField, "versions": VersionItem}[hash_name]
    found = kinds.parse(field)
    return found[0] if found else None


def test_every_field_a_workflow_of_the_scripts_writes_is_one_fields_py_names(
    wf: Workflow,
) -> None:
    # One workflow through every script: a sub-workflow with a deadline, a step begun twice
    # that emits, a handoff and a branch's choice, a group, a signal kept and a wait woken,
    # a map, a pause and a resume, a failure, and a restore that takes the map back.
    k, seen = wf.store.keys(ID), defaultdict[str, set[str]](set)

    def look() -> None:
        hashes = {"meta": k.meta, "steps": k.steps, "signals": k.signals,
                  "versions": k.versions, "maps": k.maps}  # fmt: skip
        for name, key in hashes.items():
            seen[name] |= {text(f) for f in wf.store.redis.hkeys(key)}

    assert wf.store.create(ID, PLAN, start=wf.msg("first", ids=["t0"]), deadline_at=9e9,
                           parent=("parent", "step_9", 1))  # fmt: skip
    wf.begin("step_1", owner="o1")
    assert wf.begin("step_1", owner="o2").status == "leased"
    wf.store.record_events([(ID, "step_1", Event.EMITTED, "{}"), (ID, "step_1", Event.PROGRESS,
                             '{"done": 1}')])  # fmt: skip
    look()
    wf.commit("step_1", handoff=_task("step_1.h1", 0), max_handoffs=3, add_steps=1)
    group = wf.msg("b1", "b2", group="step_2", aggregate=wf.msg("summary", ids=["agg"]))
    wf.store.send(ID, 1, group, ends=["step_2.1", "step_2.2"])
    for branch in ("step_2.1", "step_2.2"):
        wf.commit(branch, join=Join(group="step_2", total=2))
    assert wf.commit("step_3", signal=SignalSpec(name="go", id="s1")).state == "kept"
    look()
    wf.store.park(ID, "step_4", "later", 1, "", due=9e9)
    wf.commit("step_4", signal=SignalSpec(name="later", id="s2"))
    before_map = wf.store.get_context(ID).version

    maps, node = MapStore(wf.store), PlannedMap(
        step_id="step_5", index=4, member=_task("step_5", 4), over_key="items",
        output_key=None, aggregate="collect", batch_size=2)  # fmt: skip
    base = maps.base(ID, "step_5")
    maps.put_items(ID, base, [1, 2, 3], 2)
    send = wf.msg("m1", "m2", group="step_5", aggregate=wf.msg("collect", ids=["a5"]))
    assert maps.start(ID, node, base, 1, 3, [0, 1], 2, send).state == "ok"
    running = RunningStep(step_id="step_5", agent_id="a", task_type="t", started_at=utcnow())
    batch = maps.begin(ID, node, 1, task_id="m1", owner="o1", running=running,
                       lease_seconds=60, data_keys=None, fields=[])  # fmt: skip
    first = 2 * batch.batch  # (its first item completes, its second fails)
    items = {first: ItemResult(True, "1"), first + 1: ItemResult(False, error="boom")}
    maps.commit(ID, node, base, 1, 3, batch.batch, items, earlier_failed=0, task_id="m1",
                send=NOTHING)  # fmt: skip
    maps.start(ID, node, base, 1, 3, [0, 1], 2, NOTHING, reset=True)
    look()

    wf.store.transition(ID, [S.RUNNING], S.PAUSED, event=Event.WORKFLOW_PAUSED)
    assert wf.begin("step_6").status == "paused"
    look()
    wf.store.transition(ID, [S.PAUSED], S.RUNNING, event=Event.WORKFLOW_RESUMED, bump_run=True,
                        clear_paused=True)  # fmt: skip
    assert wf.commit("step_6", run=2, outcome="fail").status == S.COMPENSATING
    look()
    wf.store.restore(ID, before_map, [S.COMPENSATING], S.FAILED, event=Event.ROLLED_BACK,
                     compensation=CompensationOutcome(compensated=["step_1"]))  # fmt: skip
    look()

    unnamed = {(h, f) for h, fields in seen.items() for f in fields if _kind(h, f) is None}
    assert unnamed == set(), "a field no name in orchestration/state/fields.py names"
    # ... and every name is one a script writes (but reaps: the reaper's own, in Python).
    written = {h: {_kind(h, f) for f in fields} for h, fields in seen.items()}
    assert written == {"meta": set(MetaField) - {MetaField.REAPS}, "steps": set(StepField),
                       "signals": set(SignalField), "versions": set(VersionItem),
                       "maps": set(MapField)}  # fmt: skip
