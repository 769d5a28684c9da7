"""Calling the scripts: each registered as the names from ``model/names.py``, ``_lib.lua``,
``_outbox.lua``, then the script itself; KEYS are always the workflow's keys
(``WorkflowKeys.all``), the index, the metrics hash, the active set, the due index, then
the queues and channels of the messages the call sends (:class:`Outgoing`)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from orchestration.model import utcnow
from orchestration.model.names import lua_prelude
from orchestration.state.keys import WorkflowKeys, active_key, due_key, index_key, metrics_key
from orchestration.state.scripts.specs import NOTHING, Outgoing, Spec

SCRIPTS = (
    "create", "transition", "begin", "commit", "restore", "lease", "send", "park",
    "mapstart", "mapbegin", "mapcommit",
)  # fmt: skip


def _lua(name: str) -> str:
    return resources.files("orchestration.state").joinpath("lua", f"{name}.lua").read_text()


def _source(name: str) -> str:
    return "\n".join([lua_prelude(), _lua("_lib"), _lua("_outbox"), _lua(name)])


def standalone(client: redis.Redis[bytes], name: str) -> Script:
    """A script that is not a workflow's (its KEYS are its own, no ``_lib.lua``): the
    names of ``model/names.py``, then ``lua/<name>.lua``."""
    return client.register_script("\n".join([lua_prelude(), _lua(name)]))


# --------------------------------------------------------------------------- calling


class Scripts:
    """The scripts registered on one Redis client, called with typed specs."""

    def __init__(self, client: redis.Redis[bytes], prefix: str, retention: int) -> None:
        self.prefix, self.retention = prefix, retention
        self._fixed = [index_key(prefix), metrics_key(prefix), active_key(prefix), due_key(prefix)]
        self._scripts = {name: client.register_script(_source(name)) for name in SCRIPTS}

    def call(
        self,
        name: str,
        keys: WorkflowKeys,
        spec: Spec,
        *args: str,
        send: Outgoing = NOTHING,
        client: redis.client.Pipeline[bytes] | None = None,
    ) -> Any:
        """Run script ``name`` for one workflow; it also sends ``send`` (see _outbox.lua).
        On a pipeline (``client``), it is queued there; its reply comes from ``execute``."""
        join = send.aggregate or NOTHING
        pushes = [*send.pushes, *join.pushes]
        full = spec.model_copy(
            update={
                "channel": keys.events,
                "status_channel": keys.statuses,
                "now": spec.now or utcnow(),
                "retention": self.retention,
                "track": send.ids,
                "sends": len(send.pushes),
                "join_track": join.ids,
                "joins": len(join.pushes),
                "ops": "".join(p.op for p in pushes),
                "arm": send.group,
            }
        )
        return self._scripts[name](
            keys=[*keys.all(), *self._fixed, *(p.key for p in pushes)],
            # None is left out: cjson's null is truthy in Lua.
            args=[full.model_dump_json(by_alias=True, exclude_none=True), *args,
                  *(p.payload for p in pushes)],
            client=client,
        )  # fmt: skip
