"""Talking to Redis: one standalone server or the primary a set of Sentinels names, through
a client that rides out restarts and failovers, and writes that count once replicas have
them.

``redis://`` is one server, as it always was. ``redis+sentinel://[:pw@]h1:26379,h2:26379/
<service>/<db>`` is whatever primary the Sentinels report for ``<service>``: every client
asks them on each new connection, so after a failover the next try reaches the new
primary. A command that meets a refused or reset connection, a timeout, or a demoted
primary (``READONLY``, turned into a connection error by redis-py's Sentinel connection)
is tried again with backoff until ``failover_timeout`` has passed: every script is a
compare-and-set, so a write tried twice applies once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import unquote

import redis
from pydantic import BaseModel, ConfigDict
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from orchestration.errors import NotReplicated
from orchestration.settings import SENTINEL_SCHEME, BatonSettings, get_settings

T = TypeVar("T")
#: A command's socket timeout on Sentinel (s): a frozen primary holds a client this long at
#: most before it asks the Sentinels again. Longer than any blocking read Baton makes (1 s).
SENTINEL_SOCKET_TIMEOUT = 5.0
#: What a failed command is retried on: the connection, and a primary refusing writes
#: (``NOREPLICAS``: cut off from its replicas, its fence) or not yet promoted.
RETRIED = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)


class SentinelTarget(BaseModel):
    """A ``redis+sentinel://`` URL, parsed: where to ask, for what, and the data nodes'
    credentials."""

    model_config = ConfigDict(frozen=True)

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def sentinel_target(url: str) -> SentinelTarget | None:
    """The Sentinel target ``url`` names; None for any other URL; ``ValueError`` (naming
    what is wrong, never the password) for a malformed one."""
    if not url.startswith(SENTINEL_SCHEME):
        return None
    rest = url[len(SENTINEL_SCHEME) :]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = []
    for host in filter(None, hosts.split(",")):
        name, colon, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        try:
            sentinels.append((name or host, int(port) if colon else 26379))
        except ValueError:
            raise ValueError(f"a Sentinel's port is not a number: {host!r}") from None
    if not sentinels:
        raise ValueError("no Sentinel host: use redis+sentinel://host:26379,.../<service>/<db>")
    service, _, db = path.partition("/")
    if not service:
        raise ValueError("no service name: use redis+sentinel://host:26379,.../<service>/<db>")
    try:
        number = int(db.split("?", 1)[0] or 0)
    except ValueError:
        raise ValueError(f"the database is not a number: {db!r}") from None
    return SentinelTarget(
        sentinels=tuple(sentinels), service=service, db=number, username=username,
        password=password,
    )  # fmt: skip


class FailoverRetry(Retry):
    """redis-py's retry with a deadline instead of a count: a failover takes seconds, and
    the caller says how many it may take."""

    def __init__(self, timeout: float) -> None:
        self.pauses = ExponentialBackoff(cap=1.0, base=0.05)
        super().__init__(self.pauses, retries=-1)
        self.timeout = timeout

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        deadline = time.monotonic() + self.timeout
        failures = 0
        while True:
            try:
                return do()
            except RETRIED as error:
                failures += 1
                fail(error, failures) if with_failure_count else fail(error)
                if is_retryable is not None and not is_retryable(error):
                    raise
                pause = self.pauses.compute(failures)
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)


def connect(
    url: str,
    retries: int = 20,
    client: type[redis.Redis[bytes]] = redis.Redis,  # type: ignore[assignment]
    *,
    settings: BatonSettings | None = None,
) -> redis.Redis[bytes]:
    """A client that rides out a Redis restart: commands are retried with backoff
    (``retries`` times: about half a minute for 20; redis-py reloads scripts if the server
    lost them). On Sentinel, through a failover: until ``BATON_FAILOVER_TIMEOUT``."""
    target = sentinel_target(url)
    if target is None:
        retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=retries)
        return client.from_url(
            url,
            retry=retry,
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            health_check_interval=30,
        )
    settings = settings or get_settings()
    secret = settings.sentinel_password
    sentinels = Sentinel(
        target.sentinels,
        sentinel_kwargs={
            "password": secret.get_secret_value() if secret else None,
            "socket_timeout": 1.0,
            "socket_connect_timeout": 1.0,
        },
    )
    return sentinels.master_for(
        target.service,
        redis_class=client,
        connection_class=FailoverConnection,
        db=target.db,
        username=target.username,
        password=target.password,
        socket_timeout=SENTINEL_SOCKET_TIMEOUT,
        socket_connect_timeout=1.0,
        retry=FailoverRetry(settings.failover_timeout),
        retry_on_error=list(RETRIED),
        health_check_interval=30,
    )


def replicas_of(settings: BatonSettings) -> Replicas:
    """What a write waits for under ``settings`` (``BATON_MIN_REPLICAS``, its timeout)."""
    return Replicas(
        min_replicas=settings.write_replicas,
        timeout_ms=settings.replica_timeout_ms,
    )


#: Refusals of a node that is not (or not yet, or no longer safely) the primary. A script's
#: write on a replica comes back as a script error that carries ``READONLY``, which redis-py's
#: Sentinel connection does not see as its ``ReadOnlyError``.
NOT_PRIMARY = ("READONLY", "NOREPLICAS", "MASTERDOWN", "LOADING")


def not_primary(exc: BaseException) -> bool:
    """Whether ``exc`` is a node's refusal while a failover settles."""
    return isinstance(exc, redis.ResponseError) and any(w in str(exc) for w in NOT_PRIMARY)


class FailoverConnection(SentinelManagedConnection):
    """A connection to the primary the Sentinels name, for which a node's refusal while a
    failover settles (:data:`NOT_PRIMARY`, also inside a script's error) is a lost
    connection: it is dropped, and the client's retry (or Celery's reconnect) asks the
    Sentinels again. Without this, a ``READONLY`` from a script, or ``NOREPLICAS`` from a
    primary promoted a moment ago, is an error no retry sees, and Celery's consumer treats
    it as unrecoverable and stops the worker (celery#7946)."""

    _addressed = False  # (connecting to an address the Sentinels just gave)

    def connect_to(self, address: tuple[str, int]) -> None:
        self._addressed = True
        try:
            super().connect_to(address)
        finally:
            self._addressed = False

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        # redis-py reconnects a dropped connection here (sending a command on it), to the
        # host and port it had, not through the Sentinels: after a failover that is the old
        # primary, again and again. Ask the Sentinels first.
        if (
            getattr(self, "_sock", None) is None
            and not self._addressed
            and self.connection_pool.is_master
        ):
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(*args, **kwargs)  # type: ignore[misc]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if not_primary(exc):
                self.disconnect()
                raise redis.ConnectionError(f"not the primary now: {exc}") from exc
            raise


# --------------------------------------------------------------------------- replicas


class Replicas(BaseModel):
    """How many replicas must have a write before it counts (``WAIT``), and how long to
    wait for them."""

    model_config = ConfigDict(frozen=True)

    min_replicas: int = 0
    timeout_ms: int = 1000


#: Writes count once the primary has them (a standalone server's only choice).
NO_REPLICAS = Replicas()


def acked_call(
    client: redis.Redis[bytes], args: Sequence[Any], replicas: Replicas
) -> tuple[Any, int]:
    """Run one write command and ``WAIT`` for its replicas in the same round trip: its
    reply, and how many replicas acknowledged it (``min_replicas`` asked for none: 0).

    A client that batches commands itself (the asyncio pool's) takes the pair as one."""
    if replicas.min_replicas <= 0:
        return client.execute_command(*args), 0
    batched = getattr(client, "execute_acked", None)
    send = batched if batched is not None else partial(pipelined_wait, client)
    reply, acks = send(args, replicas.min_replicas, replicas.timeout_ms)
    if isinstance(reply, Exception):
        raise reply
    if isinstance(acks, Exception):
        raise acks
    return reply, int(acks)


def pipelined_wait(
    client: redis.Redis[bytes], args: Sequence[Any], replicas: int, timeout_ms: int
) -> list[Any]:
    """The write and its ``WAIT`` in one pipeline: ``[reply, acks]``, errors as values."""
    pipe = client.pipeline(transaction=False)
    pipe.execute_command(*args)  # type: ignore[no-untyped-call]
    pipe.execute_command("WAIT", replicas, timeout_ms)  # type: ignore[no-untyped-call]
    return pipe.execute(raise_on_error=False)


def check_acks(acks: int, replicas: Replicas, what: str) -> None:
    """Refuse a write fewer replicas hold than asked: :class:`NotReplicated`."""
    if acks < replicas.min_replicas:
        raise NotReplicated(what, acks, replicas.min_replicas, replicas.timeout_ms)


def text(value: bytes | str | int | float | None) -> str:
    """A reply value as text (nil as empty)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
