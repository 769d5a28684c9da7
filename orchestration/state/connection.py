"""Talking to Redis: a client that rides out restarts, and reply values as text."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def connect(
    url: str,
    retries: int = 20,
    client: type[redis.Redis[bytes]] = redis.Redis,  # type: ignore[assignment]
) -> redis.Redis[bytes]:
    """A client that rides out a Redis restart: commands are retried with backoff (20
    retries: about half a minute; redis-py reloads scripts if the server lost them)."""
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=retries)
    return client.from_url(
        url,
        retry=retry,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=30,
    )


def text(value: bytes | str | int | float | None) -> str:
    """A reply value as text (nil as empty)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
