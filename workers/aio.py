"""Async agents: one event loop per worker process, and the pool that runs hundreds of
their steps at once (``baton worker --pool asyncio --concurrency 500``).

Every ``async def`` task function of a process is awaited on one event loop, running in a
thread of its own (started lazily, so each forked child has its own). Whatever the pool,
a step's bookkeeping (its ``begin`` and ``commit`` scripts, its retries) stays in Celery's
hands, on the thread that took its message; only the agent's coroutine runs on the loop.

The asyncio pool is Celery's thread pool as wide as the concurrency, with the loop
started with it and stopped after it: a thread per in-flight step costs a stack and a
wait on a future, while its coroutine shares the loop with the others, so 500 steps that
wait on a model API need one process. Plain functions given to the same worker run on
those threads. Late acks, redelivery, leases, the compare-and-set commit, retries, task
events and warm shutdown (running steps finish and commit, queued ones go back) are
Celery's and Baton's as in prefork. A step's ``timeout`` cancels its coroutine
(``CancelledError`` inside it, catchable); a plain function cannot be interrupted on a
thread, so in this pool its timeout is checked when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from celery.concurrency import ALIASES
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from celery.exceptions import SoftTimeLimitExceeded

from agents.registry import Agent
from orchestration.errors import BatonError

log = logging.getLogger("baton.aio")
T = TypeVar("T")

POOL_NAME = "asyncio"
#: Pools that cannot host an asyncio loop beside them (they monkeypatch threads/sockets).
GREEN_POOLS = ("gevent", "eventlet")


class PoolRefused(BatonError):
    """``baton worker`` was given a pool that cannot run its agents."""


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

                self._thread = threading.Thread(target=serve, name="baton-loop", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Await ``coro`` on the loop from this (worker) thread; ``timeout`` cancels it.

        If this thread is interrupted (Celery's soft time limit in prefork, a shutdown),
        the coroutine is cancelled too: it never runs on after its step has given up.
        """
        future = asyncio.run_coroutine_threadsafe(_bounded(coro, timeout), self.loop())
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)


async def _bounded(coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
    if timeout is None:
        return await coro
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError as exc:
        raise SoftTimeLimitExceeded(f"step exceeded its timeout of {timeout}s") from exc


#: The process's loop (each forked child starts its own on first use).
event_loop = EventLoop()


class AsyncioPool(ThreadTaskPool):  # type: ignore[misc]
    """``--pool asyncio``: a thread per in-flight step, their coroutines on one loop."""

    def on_start(self) -> None:
        event_loop.loop()
        log.info("asyncio pool: up to %d steps at once on one event loop", self.limit)
        super().on_start()

    def on_stop(self) -> None:
        super().on_stop()  # waits for running steps: they finish and commit (warm shutdown)
        event_loop.stop()


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
