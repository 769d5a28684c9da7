"""Rate and concurrency limits: how they are written, and what one declares.

A limit belongs to an agent (``Agent("llm", rate_limit="60/m", concurrency_limit=10)``:
one budget for all its steps) or to a task type, optionally per key (``limit_key``: a
function of the step's validated parameters, e.g. the API key's id, each key with its
own budget). They are enforced in Redis by ``lua/limit.lua`` across every worker; the
declared values are defaults that ``baton limits set`` overrides at run time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestration.errors import LimitError

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PERIOD = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: Limit names are agent ids or ``<agent>.<task type>``; keys are what limit_key returns.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
MAX_KEY_LENGTH = 200


class Rate(BaseModel):
    """``count`` steps per ``period`` seconds, written ``N/s``, ``N/m`` or ``N/h``."""

    model_config = ConfigDict(frozen=True)

    count: float
    period: float

    @classmethod
    def parse(cls, text: str, what: str = "rate_limit") -> Rate:
        m = _RATE.match(text) if isinstance(text, str) else None
        if m is None or float(m.group(1)) <= 0:
            raise LimitError(
                f"{what} {text!r} is not a rate: write N/s, N/m or N/h with N > 0 (e.g. '60/m')"
            )
        return cls(count=float(m.group(1)), period=_PERIOD[m.group(2)])

    @property
    def interval(self) -> float:
        """Seconds between two steps at this rate (the GCRA emission interval)."""
        return self.period / self.count

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h"}[self.period]
        return f"{self.count:g}/{unit}"


def concurrency(value: int | None, what: str = "concurrency_limit") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LimitError(f"{what} {value!r} is not a whole number of steps of at least 1")
    return value


def check_name(name: str, what: str = "limit") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise LimitError(f"{what} name {name!r} must be letters, digits, '_', '-' or '.'")
    return name


class LimitValues(BaseModel):
    """A limit's values: declared, or as overridden at run time."""

    model_config = ConfigDict(frozen=True)

    rate: Rate | None = None
    concurrency: int | None = None

    @property
    def empty(self) -> bool:
        return self.rate is None and self.concurrency is None


KeyFn = Callable[[Any], Any]


@dataclass(frozen=True)
class Limit:
    """One declared limit: its name, values and (for a task type) the key function."""

    name: str
    values: LimitValues
    key: KeyFn | None = None

    def key_for(self, params: BaseModel) -> str:
        """The budget this step draws on: ``""`` (the whole limit) or its limit_key."""
        if self.key is None:
            return ""
        value = self.key(params)
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            raise LimitError(
                f"limit_key of {self.name} gave {value!r}: it must give a non-empty string"
            )
        text = str(value)
        if not text.isprintable() or len(text) > MAX_KEY_LENGTH:
            raise LimitError(
                f"limit_key of {self.name} gave {text[:40]!r}: a key is printable text of at "
                f"most {MAX_KEY_LENGTH} characters"
            )
        return text


def declare(
    name: str,
    rate_limit: str | None,
    concurrency_limit: int | None,
    key: KeyFn | None = None,
) -> Limit | None:
    """A checked limit, or None when nothing is limited; errors name ``name``."""
    check_name(name)
    if key is not None and not callable(key):
        raise LimitError(f"limit_key of {name} must be a function of the step's parameters")
    values = LimitValues(
        rate=Rate.parse(rate_limit, f"rate_limit of {name}") if rate_limit is not None else None,
        concurrency=concurrency(concurrency_limit, f"concurrency_limit of {name}"),
    )
    if values.empty:
        if key is not None:
            raise LimitError(f"limit_key of {name} is given without a rate or concurrency limit")
        return None
    return Limit(name, values, key)
