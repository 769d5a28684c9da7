"""``baton dashboard``'s server: workflows (not tasks), read from the same Redis state.

Flower shows Celery tasks; a workflow is invisible there. This is a small Tornado app (Tornado
ships with Flower, so nothing new to install) that reads the state store and serves:

- ``/``: one static page, vanilla JS, no build step and no CDN (it must work offline);
- ``/api/workflows``: the recent workflows with status, progress and duration;
- ``/api/workflows/<id>``: one workflow's steps and parallel groups, each step's agent,
  status, attempts and timing, its checkpoints, error and compensation;
- ``/api/workflows/<id>/events``: the same document as server-sent events, one per change,
  driven by the workflow's Redis pub/sub channel (``Subscriptions.subscribe``);
- ``/metrics``: the Prometheus counters kept by the Lua scripts (``names.Metric``), and
  gauges of the Redis read at each scrape (replicas online, their lag, failovers);
- ``/healthz``: liveness, and Redis reachability;
- ``POST /api/workflows/<id>/signals/<name>``: a signal for a waiting step (its JSON body is
  the payload), from the page's form: behind the same authentication, and with Tornado's
  XSRF check (a cookie the page echoes in a header, which another site cannot read).

Redis calls block, so every one runs on a thread pool: the IOLoop only ever writes responses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import itertools
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, TypeVar

import redis
import tornado.iostream
import tornado.web

from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import resolve_redis_url
from orchestration.errors import BatonError, SignalError, WorkflowNotFound
from orchestration.model import WORKFLOW_ID, WorkflowStatus
from orchestration.model.names import Event
from orchestration.settings import BatonSettings, get_settings, redact
from orchestration.state.connection import connect
from orchestration.state.reads import StateReader
from workers.dashboard.prometheus import render_metrics
from workers.dashboard.views import DEFAULT_FLOWER_URL, DashboardReader
from workers.doctor import Gauges, LiveProbe

MIN_INTERVAL = 0.2  # seconds between two documents sent for a running step's output
LIVE_EVENTS = (Event.EMITTED, Event.PROGRESS, Event.MAP_PROGRESS)
log = logging.getLogger("baton.dashboard")

T = TypeVar("T")
Signaller = Callable[[str, str, Any, str | None, str | None], str]


class _Base(tornado.web.RequestHandler):
    reader: DashboardReader
    pool: ThreadPoolExecutor
    credentials: bytes | None
    open_to_all = False  # /healthz: a liveness probe needs no password, and shows nothing

    def initialize(
        self, reader: DashboardReader, pool: ThreadPoolExecutor, credentials: bytes | None
    ) -> None:
        self.reader = reader
        self.pool = pool
        self.credentials = credentials

    def prepare(self) -> None:
        """HTTP basic auth on every page, API and ``/metrics`` when credentials are set."""
        if self.credentials is None or self.open_to_all:
            return
        header = self.request.headers.get("Authorization", "")
        given = b""
        if header[:6].lower() == "basic ":
            try:
                given = base64.b64decode(header[6:].strip(), validate=True)
            except (binascii.Error, ValueError):
                given = b""
        if not hmac.compare_digest(given, self.credentials):  # constant time
            raise tornado.web.HTTPError(401, reason="credentials required")

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a Redis read off the IOLoop, so one slow read never stalls other clients."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_json(self, value: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(value, separators=(",", ":")))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # JSON errors without tracebacks: messages never include settings or URLs.
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, WorkflowNotFound):
            message = f"no workflow {exc}"
        elif isinstance(exc, redis.RedisError):
            message = "Redis is unreachable"
        if status_code == 401:  # (send_error cleared the headers set before it)
            self.set_header("WWW-Authenticate", 'Basic realm="baton dashboard"')
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            return
        log.error("%s %s failed: %s", self.request.method, self.request.path, value)

    def workflow_id(self, raw: str) -> str:
        if not WORKFLOW_ID.match(raw):
            raise tornado.web.HTTPError(404, reason=f"no workflow {raw[:64]}")
        return raw


class PageHandler(_Base):
    page: bytes | None = None

    def get(self, *_: str) -> None:
        self.xsrf_token  # noqa: B018  (sets the _xsrf cookie the page's form sends back)
        if PageHandler.page is None:
            static = resources.files("workers.dashboard").joinpath("static")
            PageHandler.page = static.joinpath("index.html").read_bytes()
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(PageHandler.page)


class WorkflowsHandler(_Base):
    async def get(self) -> None:
        try:
            limit = min(max(int(self.get_argument("limit", "50")), 1), 500)
        except ValueError:
            raise tornado.web.HTTPError(400, reason="limit must be a number") from None
        rows = await self.blocking(self.reader.workflows, limit)
        self.write_json({"workflows": rows, "flower_url": self.reader.flower_url})


class WorkflowHandler(_Base):
    async def get(self, raw_id: str) -> None:
        wid = self.workflow_id(raw_id)
        try:
            doc = await self.blocking(self.reader.workflow, wid)
        except WorkflowNotFound:
            raise tornado.web.HTTPError(404, reason=f"no workflow {wid}") from None
        self.write_json(doc)


def _is_live(event: dict[str, Any]) -> bool:
    """An event that changes only what runs (a step's output, a map's counts): the
    documents that carry them go a few a second, not one per event."""
    step = event.get("step") or ""
    return event.get("event") in LIVE_EVENTS or (
        event.get("event") == Event.STEP_STARTED and "#" in step  # a map's batch
    )


def _fingerprint(doc: dict[str, Any]) -> str:
    """The document without what changes by the clock alone (the page ticks those itself)."""
    steps = [
        {k: v for k, v in step.items() if k != "execution_time"}
        for node in doc["nodes"]
        for step in (
            [node["step"]] if node["kind"] == "task" else itertools.chain(*node["branches"])
        )
    ]
    rest = {k: v for k, v in doc.items() if k not in ("now", "duration", "nodes")}
    return json.dumps([rest, steps], sort_keys=True)


class EventsHandler(_Base):
    """Server-sent events: the workflow document after every change, until it is terminal.

    The pub/sub wait (``Subscriptions.subscribe``, which also wakes once a quiet second) runs
    on the thread pool one step at a time, so the IOLoop stays free; a document identical
    to the last one sent is not sent again.
    """

    closed = False

    def on_connection_close(self) -> None:
        self.closed = True

    async def get(self, raw_id: str) -> None:
        wid = self.workflow_id(raw_id)
        try:
            await self.blocking(self.reader.store.status_of, wid)
        except WorkflowNotFound:
            raise tornado.web.HTTPError(404, reason=f"no workflow {wid}") from None
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("X-Accel-Buffering", "no")
        changes = self.reader.store.channels.subscribe([wid])
        last, quiet = "", 0
        try:
            self.write("retry: 2000\n\n")
            sent_at = 0.0
            while not self.closed:
                events = await self.blocking(next, changes)
                if (
                    events
                    and all(_is_live(e) for e in events)
                    and time.monotonic() - sent_at < MIN_INTERVAL
                ):
                    continue  # a step emitting fast: a few documents a second carry it
                doc = await self.blocking(self.reader.workflow, wid)
                key = _fingerprint(doc)
                if key != last:
                    body = json.dumps(doc, separators=(",", ":"))
                    self.write(f"event: workflow\ndata: {body}\n\n")
                    last, quiet, sent_at = key, 0, time.monotonic()
                else:
                    quiet += 1
                    if quiet < 15:
                        continue
                    self.write(": keep-alive\n\n")  # proxies keep a talking stream open
                    quiet = 0
                if WorkflowStatus(doc["status"]).is_terminal:
                    self.write("event: end\ndata: {}\n\n")
                    await self.flush()
                    break
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            await self.blocking(changes.close)  # unsubscribes; off the loop, it talks to Redis
        if not self.closed:
            self.finish()


class SignalHandler(_Base):
    """A signal from the page's form: the payload is checked against the wait's schema."""

    def initialize(  # type: ignore[override]
        self, signal: Signaller | None = None, **kw: Any
    ) -> None:
        super().initialize(**kw)
        self.signal = signal

    async def post(self, raw_id: str, name: str) -> None:
        wid = self.workflow_id(raw_id)
        if self.signal is None:
            raise tornado.web.HTTPError(503, reason="this dashboard cannot send signals")
        try:
            payload = json.loads(self.request.body or b"null")
        except ValueError:
            raise tornado.web.HTTPError(400, reason="the body is not JSON") from None
        user = self.credentials.split(b":", 1)[0].decode() if self.credentials else "dashboard"
        try:
            outcome = await self.blocking(self.signal, wid, name, payload, None, user)
        except SignalError as exc:
            raise tornado.web.HTTPError(409, reason=str(exc)) from None
        self.write_json({"outcome": outcome})


class MetricsHandler(_Base):
    def initialize(  # type: ignore[override]
        self, live: Callable[[], Gauges] | None = None, **kw: Any
    ) -> None:
        super().initialize(**kw)
        self.live = live

    async def get(self) -> None:
        counters = await self.blocking(self.reader.store.metrics)
        gauges = await self.blocking(self.live) if self.live else None
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(render_metrics(counters, gauges))


class HealthHandler(_Base):
    open_to_all = True

    async def get(self) -> None:
        ok = await self.blocking(self.reader.store.redis.ping)
        self.write_json({"ok": bool(ok)})


def make_app(
    store: StateReader,
    flower_url: str = DEFAULT_FLOWER_URL,
    *,
    threads: int = 16,
    credentials: str | None = None,
    signal: Signaller | None = None,
    live: Callable[[], Gauges] | None = None,
) -> tornado.web.Application:
    """``credentials``: ``user:password`` that every request but ``/healthz`` must give;
    ``signal``: what sends a signal (``WorkflowOrchestrator.signal``); ``live``: the
    Redis' gauges for ``/metrics`` (``LiveProbe``)."""
    reader = DashboardReader(store, flower_url)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dashboard")
    secret = credentials.encode() if credentials else None
    args = {"reader": reader, "pool": pool, "credentials": secret}
    wid = r"([^/]+)"
    return tornado.web.Application(
        [
            (r"/", PageHandler, args),
            (rf"/workflow/{wid}", PageHandler, args),
            (r"/api/workflows", WorkflowsHandler, args),
            (rf"/api/workflows/{wid}", WorkflowHandler, args),
            (rf"/api/workflows/{wid}/events", EventsHandler, args),
            (
                rf"/api/workflows/{wid}/signals/([A-Za-z0-9_\-]+)",
                SignalHandler,
                {**args, "signal": signal},
            ),
            (r"/metrics", MetricsHandler, {**args, "live": live}),
            (r"/healthz", HealthHandler, args),
        ],
        compress_response=False,  # a gzip stream would hold server-sent events back
        xsrf_cookies=True,  # POST (signals) must echo the _xsrf cookie in a header
        xsrf_cookie_kwargs={"samesite": "Strict", "httponly": False},
    )


def check_basic_auth(setting: str, credentials: str | None, several: bool = False) -> None:
    """Refuse credentials not of the form ``user:password`` (with ``several``, pairs
    separated by commas, as Flower takes them), saying so and showing none of them."""
    form = "user:password" + ("[,user2:password2]" if several else "")
    pairs = (credentials or "").split(",") if several else [credentials or ""]
    # (empty is unset, as make_app takes it)
    if credentials and not all(p.partition(":")[0] and ":" in p for p in pairs):
        raise BatonError(f"{setting} must have the form {form}: a user, a colon, a password")


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    flower_url: str = DEFAULT_FLOWER_URL,
    settings: BatonSettings | None = None,
) -> None:
    """Serve the dashboard until interrupted, on the Redis the settings name."""
    settings = settings or get_settings()
    auth = settings.dashboard_basic_auth
    credentials = auth.get_secret_value() if auth else None
    check_basic_auth("BATON_DASHBOARD_BASIC_AUTH", credentials)
    url = resolve_redis_url(settings)
    client = connect(url, settings=settings)  # (on Sentinel, follows the primary)
    store = StateReader(client, prefix=settings.key_prefix)
    orch = WorkflowOrchestrator(url, settings=settings, local_workers=False)
    live = LiveProbe(client, url, settings)
    app = make_app(
        store, flower_url, credentials=credentials, live=live,
        signal=lambda wid, name, payload, sid, by: orch.signal(wid, name, payload, sid, by=by),
    )  # fmt: skip

    async def main() -> None:
        server = app.listen(port, address=host, xheaders=False)
        log.info(
            "baton dashboard on http://%s:%d (redis %s, prefix %s)",
            host,
            port,
            redact(url),
            settings.key_prefix,
        )
        try:
            await asyncio.Event().wait()
        finally:
            server.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        live.close()
        client.close()
