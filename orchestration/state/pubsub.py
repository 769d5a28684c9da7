"""Waiting for changes: a workflow's event and status channels, over Redis pub/sub."""

from __future__ import annotations

import json
import threading
from collections.abc import Generator
from typing import Any

import redis

from orchestration.state.connection import text
from orchestration.state.keys import WorkflowKeys


class Subscriptions:
    """Pub/sub waits; each thread keeps one connection between waits (a new one costs a
    connect and a handshake, more than the whole wait when the workflow is done already)."""

    def __init__(self, client: redis.Redis[bytes], prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self._local = threading.local()

    def subscribe(
        self, workflow_ids: list[str], *, statuses_only: bool = False
    ) -> Generator[list[dict[str, Any]], None, None]:
        """Yield at start (no events), after changes (their events), and after a quiet second.

        ``statuses_only``: only changes of the workflows' status wake the caller.

        The subscription is made before the first yield, so no change can slip between
        a caller's read and its wait; a caller re-reads state after each yield. A quiet
        second also yields, for deadlines.
        """
        keys = [WorkflowKeys(self.prefix, w) for w in workflow_ids]
        channels = {k.statuses if statuses_only else k.events for k in keys}
        local = self._local
        pubsub = getattr(local, "pubsub", None)
        if pubsub is None:
            pubsub = local.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        kept = pubsub is local.pubsub and not getattr(local, "busy", False)
        if not kept:  # this thread's is in use by another subscription: one of its own
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        local.busy = True
        pubsub.subscribe(*channels)
        try:
            yield []
            while True:
                events: list[dict[str, Any]] = []
                message = pubsub.get_message(timeout=1.0)
                while message is not None:  # drain what else arrived; the caller reads once
                    if text(message["channel"]) in channels:  # not a late one of a past call
                        events.append(json.loads(message["data"]))
                    message = pubsub.get_message(timeout=0)
                yield events
        finally:
            if kept:
                local.busy = False
                try:
                    pubsub.unsubscribe(*channels)
                except redis.RedisError:
                    pubsub.close()
                    local.pubsub = None
            else:
                pubsub.close()

    def close(self) -> None:
        """Close this thread's kept pub/sub connection."""
        pubsub = getattr(self._local, "pubsub", None)
        if pubsub is not None:
            pubsub.close()
            self._local.pubsub = None
