"""The typed contract between Python and the Lua scripts in ``orchestration/state/lua``.

Each script has one spec model (what goes in, as ``ARGV[1]``) and one reply record with
a ``decode`` (what comes back); nothing else reads a script's reply by position. Every
script is registered as: the names from ``names.py``, ``_lib.lua``, ``_outbox.lua``, then
the script itself; KEYS are always the workflow's keys (``WorkflowKeys.all``), the
index, the metrics hash, the active set, then the queues and channels of the messages
the call sends (:class:`Outgoing`).
"""

from __future__ import annotations

from orchestration.state.scripts.call import Scripts
from orchestration.state.scripts.replies import (
    BeginReply,
    CommitReply,
    CreateReply,
    Delivery,
    LeaseReply,
    MapBeginReply,
    MapCommitReply,
    MapStartReply,
    ParkReply,
    RestoreReply,
    SendReply,
    StatusRefusal,
    TransitionReply,
)
from orchestration.state.scripts.specs import (
    NOTHING,
    BeginSpec,
    CommitSpec,
    CreateSpec,
    Join,
    LeaseSpec,
    MapBeginSpec,
    MapCommitSpec,
    MapStartSpec,
    Outcome,
    Outgoing,
    ParkSpec,
    Push,
    RestoreSpec,
    SendSpec,
    SignalSpec,
    Spec,
    TransitionSpec,
)

__all__ = [
    "BeginReply",
    "BeginSpec",
    "CommitReply",
    "CommitSpec",
    "CreateReply",
    "CreateSpec",
    "Delivery",
    "Join",
    "LeaseReply",
    "LeaseSpec",
    "MapBeginReply",
    "MapBeginSpec",
    "MapCommitReply",
    "MapCommitSpec",
    "MapStartReply",
    "MapStartSpec",
    "NOTHING",
    "Outcome",
    "Outgoing",
    "ParkReply",
    "ParkSpec",
    "Push",
    "RestoreReply",
    "RestoreSpec",
    "Scripts",
    "SendReply",
    "SendSpec",
    "SignalSpec",
    "Spec",
    "StatusRefusal",
    "TransitionReply",
    "TransitionSpec",
]
