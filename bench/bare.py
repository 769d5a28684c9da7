"""Bare Celery: the same no-op work as ``bench.agents``, as plain Celery tasks.

The app is configured by ``orchestration.broker.celery_config`` -- the very settings
Baton's workers use (JSON, late acks, prefetch 1, events, routing), on the same Redis
transport (``workers.transport``) -- so the only difference the
benchmark sees is Baton's engine. ``bare.*`` routes to queue ``agent.bare``.
Run: ``celery -A bench.bare worker -Q agent.bare -c 2 -P prefork``.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from celery import Celery

import bench.msglog  # noqa: F401  (message-size log, same in every process)
from orchestration.broker import celery_config
from orchestration.settings import BatonSettings
from workers.transport import install as install_transport

QUEUE = "agent.bare"


def _same_logging() -> None:
    """Give bare workers the logging Baton's workers get (same per-task log lines).

    ``celery_config`` sets a log format with Baton's ``%(baton)s`` field, which only
    Baton's logging filter fills in; without it every log line is a logging error with a
    printed traceback (~100 ms per task), which would measure the wrong thing.
    """
    try:
        from workers import logs
    except ImportError:  # an engine without per-task log context: nothing to match
        return
    logs.configure(os.environ.get("BATON_LOG_FORMAT", "text"))


def make_app(redis_url: str, settings: BatonSettings | None = None) -> Celery:
    """A Celery app with Baton's configuration and the bare no-op tasks."""
    install_transport()
    app = Celery("bare", set_as_current=False)
    app.conf.update(celery_config(settings or BatonSettings(), redis_url))
    _same_logging()

    @app.task(name="bare.noop", shared=False)
    def noop(prev: Any = None) -> dict[str, Any]:
        """Takes the previous result (chain) and returns a tiny dict."""
        return {"ok": True}

    @app.task(name="bare.payload", shared=False)
    def payload(prev: Any = None, size: int = 100 * 1024) -> dict[str, Any]:
        """Reads the previous result's blob and returns ``size`` bytes of new state."""
        seen = len(prev["blob"]) if isinstance(prev, dict) and "blob" in prev else 0
        return {"blob": "x" * size, "read": seen}

    @app.task(name="bare.relay", shared=False)
    def relay(prev: Any = None) -> Any:
        """Hands the previous result on unchanged: state that travels in messages."""
        return prev

    @app.task(name="bare.collect", shared=False)
    def collect(results: list[Any]) -> dict[str, Any]:
        """Chord callback: counts the members, as Baton's aggregate does (cheaper)."""
        return {"total": len(results), "ok": sum(1 for r in results if r)}

    return app


@cache
def _default_app() -> Celery:
    url = os.environ.get("BATON_REDIS_URL")
    if not url:  # never fall back to a shared Redis on 6379
        raise RuntimeError("bench.bare needs BATON_REDIS_URL (the benchmark sets it)")
    return make_app(url)


def __getattr__(name: str) -> Any:
    """``celery -A bench.bare`` reads ``app``: built on first access, from the environment."""
    if name in ("app", "celery"):
        return _default_app()
    raise AttributeError(name)
