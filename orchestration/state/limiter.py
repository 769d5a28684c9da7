"""Rate and concurrency limits in Redis: admission of a step (``lua/limit.lua``), the
release of its slots, run-time overrides and what each budget is using.

A budget is one limit (``orchestration/model/limits.py``) and one key of it. Its keys
(``keys.BudgetKeys``) hold its rate state (the GCRA theoretical arrival time: the next
free turn), the concurrency slots held (owner -> expiry, renewed with the step's lease, so
a dead worker's slot comes back by itself), the steps waiting for one, oldest first, and
the steps holding a turn of the rate.

A step refused a slot waits for one to be freed for it: a release publishes the owners
first in line (``keys.limit_freed_channel``) and each worker process's :class:`Wakeups`
wakes its own at once, so a freed slot is taken in the time of a round trip, not found
by polling.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import redis
from pydantic import BaseModel

from orchestration.errors import LimitError, TurnMissed
from orchestration.model.limits import Limit, LimitValues, Rate
from orchestration.model.names import STREAM_MAXLEN
from orchestration.state.connection import text
from orchestration.state.fields import RateField
from orchestration.state.keys import (
    BudgetKeys,
    WorkflowKeys,
    limit_budgets_key,
    limit_freed_channel,
    limit_overrides_key,
)
from orchestration.state.scripts.call import standalone
from orchestration.state.scripts.replies import Admission, released
from orchestration.state.scripts.specs import AdmitSpec, LimitBudget, ReleaseSpec

log = logging.getLogger("baton.limiter")

#: How late after its turn a rate-limited call may start (the jitter of a busy event loop).
#: A step that would start later takes a new turn.
ALLOWANCE = 0.010
#: Room for the time from that check to the request reaching the API (the agent's own code,
#: its HTTP client, the network), which no check in the worker can see.
SEND_MARGIN = 0.030
#: A turn this near is waited out in the worker; a farther one puts the step back.
NEAR = 1.0


def check_turn(turn_at: float, now: float) -> None:
    """Raise ``TurnMissed`` if ``now`` is too late for the turn (both monotonic)."""
    if now - turn_at > ALLOWANCE:
        raise TurnMissed(f"started {now - turn_at:.3f}s after its turn")


def spacing_ms(rate: Rate) -> float:
    """Milliseconds between two turns of ``rate``: a period holds ``count`` calls plus
    ``ALLOWANCE`` and ``SEND_MARGIN``, so a 20/s limit spaces calls 52 ms apart, and no
    second at the API holds 21 calls even when one starts late and another arrives early
    (at 10 ms and 30 ms, a bench of 400 calls on 3 workers: 10-20 turns missed in the
    first second's rush, and 1,035 ms or more at the API for any 21 calls)."""
    return (rate.period + ALLOWANCE + SEND_MARGIN) / rate.count * 1000


@dataclass(frozen=True)
class Budget:
    """What one step draws on: a limit, the key its parameters gave, and its values now."""

    limit: Limit
    key: str

    @property
    def name(self) -> str:
        return self.limit.name


class BudgetUse(BaseModel):
    """A budget as ``baton limits`` shows it."""

    name: str
    key: str
    rate: str | None
    concurrency: int | None
    overridden: bool
    running: int
    waiting: int
    waiters: list[str]  # the first few waiting steps, "<workflow_id>:<step_id>:<run>"
    next_free_in: float  # seconds until the rate admits the next step (0: now)


class Limiter:
    def __init__(self, client: redis.Redis[bytes], prefix: str) -> None:
        self.redis, self.prefix = client, prefix
        self._admit = standalone(client, "limit")
        self.overrides_key = limit_overrides_key(prefix)
        self.known_key = limit_budgets_key(prefix)
        self.wakeups = Wakeups(client, limit_freed_channel(prefix))

    def _keys(self, b: Budget) -> list[str]:
        return BudgetKeys(self.prefix, b.name, b.key).all()

    # ------------------------------------------------------------------ a step

    def admit(
        self,
        wf: WorkflowKeys,
        step_id: str,
        owner: str,
        budgets: list[Budget],
        *,
        reserved: bool,
        slot_ttl: float,
        horizon: float,
        retry: float,
        item: bool = False,
    ) -> Admission:
        """``owner``'s turn under ``budgets`` (one place in line each). ``item``: the owner
        is an item of the map ``step_id``, which shows as throttled while any item waits."""
        spec = AdmitSpec(
            owner=owner, step=step_id, reserved=reserved, item=item,
            slot_ttl_ms=int(slot_ttl * 1000), horizon_ms=int(horizon * 1000),
            retry_ms=int(retry * 1000), near_ms=int(NEAR * 1000),
            allowance_ms=int(ALLOWANCE * 1000), stream_maxlen=STREAM_MAXLEN,
            limits=[_budget(b) for b in budgets],
        )  # fmt: skip
        keys = [self.overrides_key, self.known_key, wf.throttled, wf.stream]
        reply = self._admit(
            keys=keys + [k for b in budgets for k in self._keys(b)], args=[spec.model_dump_json()]
        )
        return Admission.decode(reply)

    def renew(self, owners: str | list[str], budgets: list[Budget], ttl: float) -> None:
        """Keep these steps' concurrency slots while they run (with their lease); a slot
        one does not hold is not added."""
        until = (time.time() + ttl) * 1000
        pipe = self.redis.pipeline(transaction=False)
        for owner in [owners] if isinstance(owners, str) else owners:
            for b in budgets:
                pipe.zadd(BudgetKeys(self.prefix, b.name, b.key).slots, {owner: until}, xx=True)
        pipe.execute()

    def release(self, owner: str, budgets: list[Budget]) -> int:
        """Give back ``owner``'s slots, waking the steps first in line for them (wherever
        they wait); how many were woken."""
        spec = ReleaseSpec(
            owner=owner, channel=self.wakeups.channel, limits=[_budget(b) for b in budgets]
        )
        keys = [self.overrides_key, self.known_key, "", ""]  # (no workflow's)
        reply = self._admit(
            keys=keys + [k for b in budgets for k in self._keys(b)], args=[spec.model_dump_json()]
        )
        return released(reply)

    def settled(self, wf: WorkflowKeys, step_id: str) -> None:
        """No item of the map ``step_id`` waits any longer (its aggregate runs): it no
        longer shows as throttled."""
        self.redis.hdel(wf.throttled, step_id)

    # ------------------------------------------------------------------ run-time values

    def overrides(self) -> dict[str, LimitValues]:
        raw = self.redis.hgetall(self.overrides_key)
        return {text(k): LimitValues.model_validate_json(v) for k, v in raw.items()}

    def set(self, limit: Limit, rate: str | None, concurrency: int | None) -> LimitValues:
        """Override a declared limit's values, for every worker, from its next admission.
        ``rate``/``concurrency``: a new value, ``"none"``/``0`` to lift it, None to keep."""
        now = self.overrides().get(limit.name, limit.values)
        values = LimitValues(
            rate=now.rate if rate is None else None if rate == "none" else Rate.parse(rate),
            concurrency=(
                now.concurrency if concurrency is None else concurrency if concurrency > 0 else None
            ),
        )
        if concurrency is not None and concurrency < 0:
            raise LimitError(f"--concurrency {concurrency}: give a number of steps, 0 to lift it")
        body = values.model_dump(mode="json") | {
            "rate_ms": spacing_ms(values.rate) if values.rate else None
        }
        self.redis.hset(self.overrides_key, limit.name, json.dumps(body))
        return values

    def reset(self, name: str) -> bool:
        """Back to the declared values."""
        return bool(self.redis.hdel(self.overrides_key, name))

    def usage(self, declared: dict[str, Limit]) -> list[BudgetUse]:
        """Every declared limit with each budget it has used: values, running, waiting."""
        overrides = self.overrides()
        budgets: dict[str, set[str]] = {name: set() for name in declared}
        for member in self.redis.smembers(self.known_key):
            name, _, key = text(member).partition("\t")
            if name in budgets:
                budgets[name].add(key)
        now_ms = time.time() * 1000
        out: list[BudgetUse] = []
        for name in sorted(budgets):
            values = overrides.get(name, declared[name].values)
            for key in sorted(budgets[name]) or [""]:
                tat_key, slots, waiting, _, reserved = self._keys(Budget(declared[name], key))
                pipe = self.redis.pipeline(transaction=False)
                pipe.hget(tat_key, RateField.TAT)
                pipe.zcount(slots, now_ms, "+inf")
                pipe.zrange(waiting, 0, 9)
                pipe.zcard(waiting)
                pipe.zrangebyscore(reserved, now_ms - 1000, "+inf", start=0, num=10)
                pipe.zcount(reserved, now_ms - 1000, "+inf")
                tat, running, first, n_waiting, turns, n_reserved = pipe.execute()
                out.append(
                    BudgetUse(
                        name=name,
                        key=key,
                        rate=str(values.rate) if values.rate else None,
                        concurrency=values.concurrency,
                        overridden=name in overrides,
                        running=int(running),
                        waiting=int(n_waiting) + int(n_reserved),
                        waiters=[text(w) for w in [*first, *turns]][:10],
                        next_free_in=max(0.0, (float(tat or 0) - now_ms) / 1000),
                    )
                )
        return out


def _budget(b: Budget) -> LimitBudget:
    v = b.limit.values
    return LimitBudget(
        name=b.name,
        key=b.key,
        rate_ms=spacing_ms(v.rate) if v.rate else None,
        concurrency=v.concurrency,
    )


class Wake:
    """A waiting step's wake-up, set by :class:`Wakeups`' listener thread; waited on from a
    thread (``wait``) or a coroutine on any loop (``wait_async``)."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def set(self) -> None:
        self._flag.set()
        with self._lock:
            loop, event = self._loop, self._event
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    def wait(self, timeout: float) -> bool:
        """Until woken (True) or ``timeout`` seconds have passed (False)."""
        woken = self._flag.wait(timeout)
        self._flag.clear()
        return woken

    async def wait_async(self, timeout: float) -> bool:
        with self._lock:
            if self._event is None:
                self._event, self._loop = asyncio.Event(), asyncio.get_running_loop()
            event = self._event
        if not self._flag.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        woken = self._flag.is_set()
        self._flag.clear()
        event.clear()
        return woken


#: After a lost pub/sub connection, the wake-up listener subscribes again this much later.
RELISTEN_BACKOFF = 0.5


class Wakeups:
    """The steps of this process waiting for a concurrency slot, by owner, and one thread
    listening on the limiter's channel: a release names the owners its slots are for, and
    those found here are woken. (A lost message costs a waiter only its next look.)"""

    def __init__(self, client: redis.Redis[bytes], channel: str) -> None:
        self.client, self.channel = client, channel
        self._lock = threading.Lock()
        self._waiting: dict[str, list[Wake]] = {}
        self._pid: int | None = None
        self._subscribed = threading.Event()

    @contextmanager
    def expecting(self, owner: str) -> Iterator[Wake]:
        """A wake-up for ``owner`` while inside: enter before asking for the slot, so a
        release between the refusal and the wait is not missed."""
        self._listening()
        wake = Wake()
        with self._lock:
            self._waiting.setdefault(owner, []).append(wake)
        try:
            yield wake
        finally:
            with self._lock:
                wakes = self._waiting.get(owner, [])
                if wake in wakes:
                    wakes.remove(wake)
                if not wakes:
                    self._waiting.pop(owner, None)

    def _listening(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._subscribed = threading.Event()
            threading.Thread(target=self._listen, name="baton-limit-wakeups", daemon=True).start()
            self._pid = os.getpid()
        self._subscribed.wait(5.0)  # (subscribed before the first ask; else it looks again)

    def _listen(self) -> None:
        while True:
            try:
                pubsub = self.client.pubsub()
                pubsub.subscribe(self.channel)
                while True:
                    msg = pubsub.get_message(timeout=5.0)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        self._subscribed.set()
                        self._wake_all()  # (what was published meanwhile: look again)
                    elif msg["type"] == "message":
                        self._wake(json.loads(msg["data"]))
            except Exception as exc:  # the connection: listen again, waiters look again
                log.warning("limit wake-ups: %s; listening again", exc)
                time.sleep(RELISTEN_BACKOFF)

    def _wake(self, owners: list[str]) -> None:
        with self._lock:
            wakes = [w for o in owners for w in self._waiting.get(o, ())]
        for wake in wakes:
            wake.set()

    def _wake_all(self) -> None:
        with self._lock:
            wakes = [w for ws in self._waiting.values() for w in ws]
        for wake in wakes:
            wake.set()
