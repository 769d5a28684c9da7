"""Bounds on what callers give, and on times as they are read back.

What comes in is capped like what steps put out: a workflow's parameters and a signal's
payload at ``BATON_MAX_INPUT_BYTES`` of JSON, as the state store would keep them. Every
duration a definition gives (a sleep, ``sleep_until``, a timeout, a retry delay) is at most
``MAX_DURATION``. A time read back from the store (written, perhaps, by an older version
that took any duration) is brought within what a ``datetime`` holds: past the calendar's
end it reads as ``FAR_FUTURE``, never as an error.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from orchestration.model.records import dumps

MAX_DURATION_DAYS = 366
#: The longest sleep, timeout or retry delay a definition may give, in seconds.
MAX_DURATION = MAX_DURATION_DAYS * 24 * 3600
#: What a time past the calendar's end (year 9999) reads as.
FAR_FUTURE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
FAR_FUTURE_MS = int(FAR_FUTURE.timestamp()) * 1000
TOO_LONG = f"at most {MAX_DURATION_DAYS} days ({MAX_DURATION:,} seconds)"


def _at_most_max(seconds: float) -> float:
    if not seconds <= MAX_DURATION:  # (inf and NaN too)
        raise PydanticCustomError("too_long", TOO_LONG)
    return seconds


#: A duration in seconds, at most ``MAX_DURATION``.
Duration = Annotated[float, AfterValidator(_at_most_max)]


def within_max_ahead(when: datetime) -> datetime:
    """A time to wait until, refused if more than ``MAX_DURATION`` from now."""
    if when.timestamp() - datetime.now(UTC).timestamp() > MAX_DURATION:
        raise PydanticCustomError("too_long", f"{TOO_LONG} from now")
    return when


def over_input_cap(value: Any, cap: int) -> str | None:
    """Why ``value`` may not be taken in: its JSON is over ``cap`` bytes; else None."""
    size = len(dumps(value))  # (ASCII: non-ASCII characters are escaped)
    if size <= cap:
        return None
    return f"{size:,} bytes as JSON, over BATON_MAX_INPUT_BYTES ({cap:,} bytes)"


def stored_ms(value: Any) -> int:
    """A stored time (epoch milliseconds) as one a ``datetime`` holds: up to
    ``FAR_FUTURE``; 0 (none) for a negative one or anything not a number."""
    try:
        ms = float(value)
    except (TypeError, ValueError):
        return 0
    if math.isnan(ms) or ms <= 0:
        return 0
    return int(min(ms, FAR_FUTURE_MS))


def iso_at(seconds: float) -> str:
    """The ISO time of epoch ``seconds``, ``FAR_FUTURE`` past the calendar's end."""
    return datetime.fromtimestamp(stored_ms(seconds * 1000) / 1000, UTC).isoformat()
