"""Async agents: one event loop per worker process, and the pool that runs hundreds of
their steps at once (``baton worker --pool asyncio --concurrency 500``).

Every ``async def`` task function of a process is awaited on one event loop, running in a
thread of its own (started lazily, so each forked child has its own).

In the asyncio pool, a step of an async task runs whole on that loop's thread, in a
greenlet of its own: Celery's tracer, Baton's ``begin`` and ``commit`` scripts, its
retries, exactly as in prefork, until the step awaits its agent's coroutine. There the
greenlet switches out, the coroutine becomes a task on the loop, and when it is done the
greenlet is switched back in with its result (SQLAlchemy's asyncio bridge does the same).
So 1,000 steps in flight cost 1,000 small greenlets and tasks, not 1,000 OS threads
fighting over the GIL; the Redis calls around each step are short and block the loop only
while they run. Celery's per-task state (``task.request``, ``current_task``) is kept per
greenlet (``celery.utils.threads`` keys it by greenlet when greenlet is installed), and
the logs' step context is a contextvar copied into the coroutine's task.

Plain functions given to the same worker (and the engine's control tasks) run on a thread
pool as wide as the concurrency, so one worker serves both kinds. Late acks, redelivery,
leases, the compare-and-set commit, retries, task events and warm shutdown (running steps
finish and commit, queued ones go back) are Celery's and Baton's as in prefork. A step's
``timeout`` cancels its coroutine (``CancelledError`` inside it, catchable); a plain
function cannot be interrupted on a thread, so in this pool its timeout is checked when it
returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from celery.concurrency import ALIASES
from celery.concurrency.base import apply_target
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from celery.exceptions import SoftTimeLimitExceeded
from greenlet import getcurrent, greenlet

from agents.registry import Agent
from orchestration.errors import PoolRefused, TurnMissed
from orchestration.state.connection import pipelined_wait
from orchestration.state.limiter import check_turn

log = logging.getLogger("baton.aio")
T = TypeVar("T")

POOL_NAME = "asyncio"
#: Pools that cannot host an asyncio loop beside them (they monkeypatch threads/sockets).
GREEN_POOLS = ("gevent", "eventlet")


class EventLoop:
    """The process's event loop for async task functions, in a daemon thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()
                    # (stopped: async generators are finalised, as at asyncio.run's end,
                    # so what closes with the loop does: llm.session()'s HTTP session)
                    try:
                        loop.run_until_complete(loop.shutdown_asyncgens())
                    finally:
                        loop.close()

                self._thread = threading.Thread(target=serve, name="baton-loop", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def run(
        self,
        coro: Coroutine[Any, Any, T],
        timeout: float | None = None,
        start_at: float | None = None,
        *,
        on_time: bool = False,
    ) -> T:
        """Await ``coro`` on the loop from this (worker) thread; ``timeout`` cancels it.
        ``start_at`` (monotonic): not before then (a rate limit's turn), timed on the loop;
        ``on_time``: nor too long after (``TurnMissed``, the coroutine never started).

        If this thread is interrupted (Celery's soft time limit in prefork, a shutdown),
        the coroutine is cancelled too: it never runs on after its step has given up.
        From a step's greenlet on the loop's own thread (the asyncio pool), the greenlet
        switches out until the coroutine is done.
        """
        if isinstance(current := getcurrent(), StepGreenlet):
            return current.await_(_bounded(coro, timeout, start_at, on_time))
        future = asyncio.run_coroutine_threadsafe(
            _bounded(coro, timeout, start_at, on_time), self.loop()
        )
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
            thread, self._thread = self._thread, None
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)


async def _bounded(
    coro: Coroutine[Any, Any, T],
    timeout: float | None,
    start_at: float | None = None,
    on_time: bool = False,
) -> T:
    if start_at is not None:
        if (delay := start_at - time.monotonic()) > 0:
            await asyncio.sleep(delay)  # (its turn: a deadline, not a poll)
        if on_time:
            try:
                check_turn(start_at, time.monotonic())
            except TurnMissed:
                coro.close()  # never started
                raise
    if timeout is None:
        return await coro
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError as exc:
        raise SoftTimeLimitExceeded(f"step exceeded its timeout of {timeout}s") from exc


#: The process's loop (each forked child starts its own on first use).
event_loop = EventLoop()


class StepGreenlet(greenlet):  # type: ignore[misc]
    """One step of an async task, run on the loop's thread (see the module's docstring).

    Its parent is the loop's thread. Where it waits, it switches there with what it
    waits for (a :class:`_Awaiting` coroutine, or a Redis command for the loop's next
    :class:`RedisBatch`), which switches it back in with the outcome.
    """

    def __init__(self, run: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(run)
        self.loop = loop

    def await_(self, coro: Coroutine[Any, Any, T]) -> T:
        """Called inside: switch out until the coroutine, a task on the loop, is done."""
        return self.parent.switch(_Awaiting(coro, contextvars.copy_context()))  # type: ignore[no-any-return]

    def start(self) -> None:
        self.resume(self.switch)

    def resume(self, switch: Callable[..., Any], *outcome: Any) -> None:
        """Switch in (with the awaited outcome); when it waits again, schedule that."""
        try:
            waits_for = switch(*outcome)
        except BaseException:  # apply_target reports a task's errors itself: not one
            log.exception("asyncio pool: a step's greenlet failed")
            return
        if not self.dead:
            waits_for.schedule(self)


@dataclass
class _Awaiting:
    coro: Coroutine[Any, Any, Any]
    context: contextvars.Context

    def schedule(self, g: StepGreenlet) -> None:
        task = g.loop.create_task(self.coro, context=self.context)

        def done(task: asyncio.Task[Any]) -> None:
            if task.cancelled():
                g.resume(g.throw, asyncio.CancelledError())
            elif (exc := task.exception()) is not None:
                g.resume(g.throw, exc)
            else:
                g.resume(g.switch, task.result())

        task.add_done_callback(done)


@dataclass
class _Command:
    client: redis.Redis[bytes]
    args: tuple[Any, ...]
    options: dict[str, Any]
    replicas: tuple[int, int] | None = None  # a write that WAITs: (replicas, timeout ms)

    def schedule(self, g: StepGreenlet) -> None:
        turns(g.loop).batch.add(g, self)


#: Commands that block on the server: never batched (they would hold every other step).
BLOCKING = frozenset({"BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX",
                      "BLMPOP", "BZMPOP", "XREAD", "XREADGROUP", "WAIT", "SUBSCRIBE"})  # fmt: skip


class LoopRedis(redis.Redis):  # type: ignore[type-arg]
    """The engine's Redis client. From a step's greenlet, a command waits for the loop's
    next :class:`RedisBatch`: the begin and commit scripts of every step that reached
    them in one turn of the loop go in one pipelined round trip, and the loop is never
    blocked by one step's wait on Redis. Elsewhere (threads, prefork) it is redis-py's."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        current = getcurrent()
        if isinstance(current, StepGreenlet) and str(args[0]).upper() not in BLOCKING:
            return current.parent.switch(_Command(self, args, options))
        return super().execute_command(*args, **options)

    def execute_acked(self, args: Sequence[Any], replicas: int, timeout_ms: int) -> Any:
        """A write and its ``WAIT`` (``state.connection.acked_call``): from a step's
        greenlet, in the loop's next batch, whose one ``WAIT`` covers every write in it;
        elsewhere, the pair in one pipeline."""
        current = getcurrent()
        if isinstance(current, StepGreenlet):
            return current.parent.switch(_Command(self, tuple(args), {}, (replicas, timeout_ms)))
        return pipelined_wait(self, args, replicas, timeout_ms)


class RedisBatch:
    """The commands a loop's step greenlets wait on, sent once per turn of the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[tuple[StepGreenlet, _Command]] = []

    def add(self, g: StepGreenlet, command: _Command) -> None:
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append((g, command))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        by_client: dict[int, list[tuple[StepGreenlet, _Command]]] = {}
        for item in pending:
            by_client.setdefault(id(item[1].client), []).append(item)
        for items in by_client.values():
            pipe = items[0][1].client.pipeline(transaction=False)
            for _, cmd in items:
                pipe.execute_command(*cmd.args, **cmd.options)  # type: ignore[no-untyped-call]
            waits = [cmd.replicas for _, cmd in items if cmd.replicas]
            if waits:  # one WAIT after every write of the batch covers them all
                most, longest = max(n for n, _ in waits), max(ms for _, ms in waits)
                pipe.execute_command("WAIT", most, longest)  # type: ignore[no-untyped-call]
            try:
                replies: list[Any] = pipe.execute(raise_on_error=False)
            except Exception as exc:  # the connection: each step sees it, as from redis-py
                replies = [exc] * (len(items) + bool(waits))
            acks = replies.pop() if waits else None
            for (g, cmd), reply in zip(items, replies, strict=True):
                if cmd.replicas is not None and not isinstance(reply, Exception):
                    reply = [reply, acks]  # (acks: a count, or the WAIT's own error)
                if isinstance(reply, Exception):
                    turns(self.loop).resume(g.resume, g.throw, reply)
                else:
                    turns(self.loop).resume(g.resume, g.switch, reply)


class Turns:
    """Greenlet work of a loop, a slice per turn of the loop: a hundred steps started or
    resumed at once run ``SLICE`` seconds at a time, so the loop's timers (a rate limit's
    turn) and coroutines are never held up by more than that.

    Steps under way are resumed before new ones start: a thousand steps arriving at once
    would otherwise queue every step's next move behind all the starts, and no call would
    go out until the last step had begun.
    """

    SLICE = 0.005

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.resumes: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self.starts: deque[Callable[[], None]] = deque()
        self.batch = RedisBatch(loop)  # the Redis commands its greenlets wait on

    def resume(self, fn: Callable[..., None], *args: Any) -> None:
        self._wake()
        self.resumes.append((fn, args))

    def start(self, fn: Callable[[], None]) -> None:
        self._wake()
        self.starts.append(fn)

    def _wake(self) -> None:
        if not self.resumes and not self.starts:
            self.loop.call_soon(self.run)

    def run(self) -> None:
        until = time.monotonic() + self.SLICE
        while self.resumes or self.starts:
            if self.resumes:
                fn, args = self.resumes.popleft()
                fn(*args)
            else:
                self.starts.popleft()()
            if time.monotonic() >= until:
                break
        if self.resumes or self.starts:
            self.loop.call_soon(self.run)


def turns(loop: asyncio.AbstractEventLoop) -> Turns:
    """The loop's :class:`Turns` and :class:`RedisBatch` (called on the loop's thread)."""
    t = _turns.get(loop)
    if t is None:
        t = _turns[loop] = Turns(loop)
    return t


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Turns] = weakref.WeakKeyDictionary()


class AsyncioPool(ThreadTaskPool):  # type: ignore[misc]
    """``--pool asyncio``: async tasks' steps in greenlets on the loop's thread, plain
    ones on a thread pool as wide as the concurrency."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight = 0  # steps in greenlets: a warm shutdown waits for them
        self._idle = threading.Condition()

    def on_start(self) -> None:
        # What the worker has built by now (modules, the app, its agents) lives as long as
        # the process: out of the collector's sight, a full collection with a thousand
        # steps in flight walks only theirs (it took 100-160 ms a pass, every thread held).
        gc.collect()
        gc.freeze()
        event_loop.loop()
        log.info("asyncio pool: up to %d steps at once on one event loop", self.limit)
        super().on_start()

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **options: Any,
    ) -> Any:
        task = self.app.tasks.get(args[0]) if args else None  # (name, id, request, body..)
        if not getattr(task, "baton_async", False):
            return super().on_apply(target, args, kwargs, callback, accept_callback, **options)
        loop = event_loop.loop()

        def run() -> None:
            try:
                apply_target(target, args, kwargs, callback, accept_callback)
            finally:
                with self._idle:
                    self._in_flight -= 1
                    self._idle.notify_all()

        with self._idle:
            self._in_flight += 1
        loop.call_soon_threadsafe(lambda: turns(loop).start(StepGreenlet(run, loop).start))
        return None

    def on_stop(self) -> None:
        with self._idle:  # running steps finish and commit (warm shutdown)
            self._idle.wait_for(lambda: self._in_flight == 0)
        super().on_stop()
        event_loop.stop()

    def _get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super()._get_info()
        info["steps-on-loop"] = self._in_flight
        return info


def check_pool(pool: str, agents: Sequence[Agent], autoscale: str | None = None) -> None:
    """Refuse, saying why, a pool that cannot run the agents a worker is given."""
    if pool in GREEN_POOLS:
        async_tasks = [
            tt.celery_name for a in agents for tt in a.task_types.values() if tt.is_async
        ]
        if async_tasks:
            raise PoolRefused(
                f"--pool {pool} cannot run async agents ({', '.join(async_tasks)}): its "
                "monkeypatching breaks asyncio; use --pool asyncio"
            )
    if autoscale and pool != "prefork":
        raise PoolRefused(f"--autoscale needs --pool prefork; --pool {pool} has a fixed width")


def register() -> None:
    """Make ``-P asyncio`` a pool name Celery knows (before its CLI is built)."""
    ALIASES.setdefault(POOL_NAME, f"{__name__}:AsyncioPool")
