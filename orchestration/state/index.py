"""The index of workflows (newest first, for ``list``) and the set the reaper watches.

Both outlive the workflows they name: a workflow's own keys expire after its retention,
its entries here are dropped as they are found expired (``list_ids``, ``prune``).
"""

from __future__ import annotations

import time

import redis

from orchestration.state.connection import text
from orchestration.state.keys import WorkflowKeys, active_key, index_key


class WorkflowIndex:
    def __init__(self, client: redis.Redis[bytes], prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self.key = index_key(prefix)
        self.active_key = active_key(prefix)

    def list_ids(self, limit: int = 50) -> list[str]:
        """Most recent workflow ids first; ids whose state has expired are dropped."""
        ids = [text(i) for i in self.redis.zrevrange(self.key, 0, limit - 1)]
        alive = self._alive(ids)
        gone = [wid for wid in ids if wid not in alive]
        if gone:
            self.redis.zrem(self.key, *gone)
        return [wid for wid in ids if wid in alive]

    def prune(self, before: float, offset: int = 0, batch: int = 500) -> tuple[int, int]:
        """Drop the workflows created before ``before`` (epoch seconds) whose state has
        expired, looking at ``batch`` of them from ``offset`` (oldest first).

        Returns (how many were dropped, the offset to look from next time: 0 once the
        old end of the index has been covered). ``list_ids`` drops expired ids only among
        the newest; without this, the index would keep an entry per workflow ever run.
        """
        ids = [text(i) for i in self.redis.zrangebyscore(self.key, "-inf", before, offset, batch)]
        if not ids:
            return 0, 0
        alive = self._alive(ids)
        gone = [wid for wid in ids if wid not in alive]
        if gone:
            self.redis.zrem(self.key, *gone)
        kept = len(ids) - len(gone)
        return len(gone), (offset + kept if len(ids) == batch else 0)

    def starting_with(self, prefix: str, limit: int = 10) -> list[str]:
        """Up to ``limit`` live workflow ids that begin with ``prefix`` (a prefix of the
        id alphabet only: it is matched as a glob), sorted."""
        found = {
            text(member)
            for member, _ in self.redis.zscan_iter(self.key, match=f"{prefix}*", count=1000)
        }
        alive = self._alive(sorted(found))
        return sorted(alive)[:limit]

    def _alive(self, ids: list[str]) -> set[str]:
        pipe = self.redis.pipeline(transaction=False)
        for wid in ids:
            pipe.exists(WorkflowKeys(self.prefix, wid).meta)
        return {wid for wid, ok in zip(ids, pipe.execute(), strict=True) if ok}

    def active(self) -> dict[str, float]:
        """Running (or compensating) workflows by their last progress, epoch seconds."""
        raw = self.redis.zrange(self.active_key, 0, -1, withscores=True)
        return {WorkflowKeys.workflow_of(text(member)): score for member, score in raw}

    def touch(self, workflow_id: str) -> None:
        """Count now as the workflow's last progress."""
        self.redis.zadd(self.active_key, {WorkflowKeys(self.prefix, workflow_id).meta: time.time()})

    def forget(self, workflow_id: str) -> None:
        """Stop watching a workflow whose state is gone."""
        self.redis.zrem(self.active_key, WorkflowKeys(self.prefix, workflow_id).meta)
