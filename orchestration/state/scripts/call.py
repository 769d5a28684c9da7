"""Calling the scripts: each registered as the names from ``model/names.py``, ``_lib.lua``,
``_outbox.lua``, then the script itself; KEYS are always the workflow's keys
(``WorkflowKeys.all``), the index, the metrics hash, the active set, the due index, then
the queues and channels of the messages the call sends (:class:`Outgoing`)."""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from orchestration.errors import StateStoreError
from orchestration.model import utcnow
from orchestration.model.names import Metric, lua_prelude
from orchestration.state.connection import (
    NO_REPLICAS,
    Replicas,
    acked_call,
    check_acks,
)
from orchestration.state.keys import WorkflowKeys, active_key, due_key, index_key, metrics_key
from orchestration.state.scripts.specs import NOTHING, Outgoing, Spec

log = logging.getLogger("baton.state")
SCRIPTS = (
    "create", "transition", "begin", "commit", "restore", "lease", "send", "park",
    "mapstart", "mapbegin", "mapcommit",
)  # fmt: skip

#: What each script's write is, for the one line a write no replica took says.
WHAT = {
    "create": "the creation", "transition": "the status change", "restore": "the restore",
    "begin": "a step's start", "commit": "a step's commit", "lease": "a step's lease",
    "send": "the send", "park": "a step's wait", "mapstart": "a map's start",
    "mapbegin": "a map batch's start", "mapcommit": "a map batch's commit",
}  # fmt: skip


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

    def __init__(
        self,
        client: redis.Redis[bytes],
        prefix: str,
        retention: int,
        replicas: Replicas = NO_REPLICAS,
    ) -> None:
        self.client, self.prefix, self.retention = client, prefix, retention
        self.replicas = replicas
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
        script = self._scripts[name]
        all_keys = [*keys.all(), *self._fixed, *(p.key for p in pushes)]
        # None is left out: cjson's null is truthy in Lua.
        all_args = [full.model_dump_json(by_alias=True, exclude_none=True), *args,
                    *(p.payload for p in pushes)]  # fmt: skip
        if client is not None:
            return script(keys=all_keys, args=all_args, client=client)
        what = f"{WHAT.get(name, name)} of workflow {keys.workflow_id}"
        try:
            return self._acked(name, script, all_keys, all_args, what)
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # (after the retries)
            raise StateStoreError(f"cannot reach Redis for {what}: {exc}") from exc

    def _acked(self, name: str, script: Script, keys: list[str], args: list[Any], what: str) -> Any:
        """The script and its ``WAIT`` in one round trip; :class:`NotReplicated` if fewer
        replicas than asked have its writes. A server that has lost the script (a restart,
        a new primary) gets it loaded, and it runs again: NOSCRIPT ran nothing."""
        if self.replicas.min_replicas <= 0:
            return script(keys=keys, args=args)
        source: Any = script  # (redis-py's Script: its sha and source, untyped)
        command = ["EVALSHA", source.sha, len(keys), *keys, *args]
        try:
            reply, acks = acked_call(self.client, command, self.replicas)
        except NoScriptError:
            source.sha = command[1] = self.client.script_load(source.script)  # type: ignore[no-untyped-call]
            reply, acks = acked_call(self.client, command, self.replicas)
        if acks < self.replicas.min_replicas:
            self._count_not_replicated(name)
        check_acks(acks, self.replicas, what)
        return reply

    def _count_not_replicated(self, name: str) -> None:
        """Count it for ``/metrics`` (best effort: the primary may be the one going away)."""
        try:
            self.client.hincrby(self._fixed[1], f"{Metric.WRITES_NOT_REPLICATED}|{name}", 1)
        except redis.RedisError as exc:
            log.warning("could not count a write no replica took: %s", exc)
