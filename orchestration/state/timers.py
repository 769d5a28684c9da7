"""The due-time index of parked waits (``keys.due_key``): which timers are due, claimed
so that one sweeper fires each. A claim pushes the timer 30 s on; the commit that fires
it removes it; a sweeper that dies between the two leaves it to fire 30 s later. It fires
at most once whatever happens: the commit is a compare-and-set on the parked wait."""

from __future__ import annotations

import time

import redis

from orchestration.state.keys import due_key, due_member
from orchestration.state.scripts.call import standalone
from orchestration.state.scripts.replies import ClaimReply
from orchestration.state.scripts.specs import ClaimSpec

RECLAIM_MS = 30_000


class DueTimers:
    def __init__(self, client: redis.Redis[bytes], prefix: str) -> None:
        self.redis, self.key = client, due_key(prefix)
        self._claim = standalone(client, "claim")

    def claim(self, limit: int = 200) -> list[tuple[str, str, int]]:
        """Timers due now, claimed: (workflow_id, step_id, run) each."""
        spec = ClaimSpec(now_ms=int(time.time() * 1000), limit=limit, reclaim_ms=RECLAIM_MS)
        return ClaimReply.decode(self._claim(keys=[self.key], args=[spec.model_dump_json()])).timers

    def next_in(self) -> float | None:
        """Seconds until the earliest timer (None: there is none)."""
        first = self.redis.zrange(self.key, 0, 0, withscores=True)
        return max(0.0, first[0][1] / 1000 - time.time()) if first else None

    def drop(self, workflow_id: str, step_id: str, run: int) -> None:
        self.redis.zrem(self.key, due_member(workflow_id, step_id, run))

    def reschedule(self, workflow_id: str, step_id: str, run: int, at: float) -> None:
        """Fire the timer at ``at`` (epoch seconds) instead, if it is still pending."""
        self.redis.zadd(self.key, {due_member(workflow_id, step_id, run): int(at * 1000)}, xx=True)

    def pending(self) -> int:
        return int(self.redis.zcard(self.key))
