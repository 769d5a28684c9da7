# mypy: disable-error-code="untyped-decorator"
# (Celery's ``app.task`` is untyped; the tasks keep their own signatures' types.)
"""Bare Celery: the same no-op work as ``bench.agents``, as plain Celery tasks.

The app is configured by ``orchestration.flow.broker.celery_config`` -- the very settings
Baton's workers use (JSON, late acks, prefetch 1, events, routing), on the same Redis
transport (``workers.transport``) -- so the only difference the
benchmark sees is Baton's engine. ``bare.*`` routes to queue ``agent.bare``.
Run: ``celery -A bench.bare worker -Q agent.bare -c 2 -P prefork``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from functools import cache
from typing import Any

from celery import Celery

import bench.msglog  # noqa: F401  (message-size log, same in every process)
from orchestration.flow.broker import celery_config
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

    @app.task(name="bare.noop_item", shared=False)
    def noop_item(i: int = 0) -> dict[str, Any]:
        """One item of a map (``bench/maps.py``): its index in, a tiny dict out."""
        return {"ok": True}

    @app.task(name="bare.collect_items", shared=False)
    def collect_items(results: list[Any]) -> list[Any]:
        """Chord callback that keeps every item's result, in order: a chord of ``noop_item``
        hands them over as they are; a chord over ``chunks`` hands over a list per chunk,
        flattened here."""
        if results and all(isinstance(r, list) for r in results):
            return [item for chunk in results for item in chunk]
        return list(results)

    @app.task(name="bare.chat", shared=False)
    def chat(url: str, key: str = "sk-bench", prompt: str = "ping") -> dict[str, Any]:
        """One chat completion, blocking its worker slot (process or thread) meanwhile."""
        return _chat_call(url, key, prompt)

    @app.task(name="bare.chat_limited", shared=False, rate_limit="20/s")
    def chat_limited(url: str, key: str = "sk-bench", prompt: str = "ping") -> dict[str, Any]:
        """``chat`` under Celery's own rate limit, which each worker applies on its own."""
        return _chat_call(url, key, prompt)

    @app.task(name="bare.emit_progress", shared=False, bind=True)
    def emit_progress(
        self: Any, count: int = 200, gap_ms: float = 5.0, lead_ms: float = 200.0
    ) -> dict[str, Any]:
        """Celery's way to show progress: ``update_state(PROGRESS)`` with the time, which a
        client reads by polling the task's result."""
        time.sleep(lead_ms / 1000)
        for i in range(count):
            self.update_state(state="PROGRESS", meta={"i": i, "t": time.time()})
            time.sleep(gap_ms / 1000)
        return {"emitted": count}

    @app.task(name="bare.collect_sent", shared=False)
    def collect_sent(results: list[Any]) -> dict[str, Any]:
        """Chord callback of the chat calls: when each was sent, and their statuses."""
        return {
            "sent": sorted(r["sent"] for r in results),
            "statuses": [r["status"] for r in results],
        }

    return app


def _chat_call(url: str, key: str, prompt: str) -> dict[str, Any]:
    """``bench.agents.chat_call``, blocking (urllib: a connection per call, no pool). A
    refusal (429) is returned, not raised, as there; so is when the request was sent."""
    body = {"model": "bench", "messages": [{"role": "user", "content": prompt}]}
    req = urllib.request.Request(
        f"{url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    sent = time.time()
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        exc.close()
        return {"status": exc.code, "chars": 0, "sent": sent}
    content = answer["choices"][0]["message"]["content"]
    return {"status": 200, "chars": len(content), "sent": sent}


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
