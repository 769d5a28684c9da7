"""Expected failures of the ``baton`` command as one plain line, a hint and an exit code.

Exit codes: 0 ok; 1 the workflow failed; 2 the request was refused (bad input or
arguments, unknown or ambiguous id, an operation the workflow's status does not allow, an
agent module that cannot be imported, a malformed basic-auth setting); 3 Baton could not
reach its Redis or broker (unreachable, refused credentials, a malformed URL); 4 timed
out waiting. Anything not listed here is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
from kombu.exceptions import OperationalError
from pydantic import ValidationError

from orchestration.errors import (
    AgentModuleError,
    BatonError,
    CommandRefused,
    DefinitionError,
    StateStoreError,
    WorkflowNotFound,
    WorkflowTimeout,
)
from orchestration.settings import BatonSettings, get_settings, redact
from orchestration.state.connection import sentinel_target

OK, FAILED, REFUSED, UNREACHABLE, TIMED_OUT = 0, 1, 2, 3, 4
URL_FIELDS = {"redis_url": "BATON_REDIS_URL", "broker_url": "BATON_BROKER_URL"}
URL_HINT = "use redis://[:password@]host:port/db or redis+sentinel://host:26379,.../service/db"


@dataclass(frozen=True)
class Failure:
    code: int
    message: str
    hint: str = ""

    def line(self) -> str:
        text = " ".join(self.message.split())  # one line, whatever the message held
        return f"baton: {text}" + (f" (hint: {self.hint})" if self.hint else "")


def check_urls(settings: BatonSettings) -> None:
    """Refuse a Redis or broker URL that cannot even be parsed (a port out of range, a
    broken IPv6 address), naming the setting and never the URL (it may hold a password)."""
    for field, name in URL_FIELDS.items():
        url = getattr(settings, field)
        try:
            if sentinel_target(url or "") is None:
                urlsplit(url or "").port  # noqa: B018  (parsing the port is the check)
        except ValueError as exc:
            # The parser quotes what it could not read (a "port" that is the tail of a
            # password holding ':' and '/'): never echoed.
            what = re.sub(r"'[^']*'", "'...'", str(exc))
            raise CommandRefused(
                f"{name} is not a valid URL: {what}", URL_HINT, UNREACHABLE
            ) from None


def failure_of(exc: BaseException) -> Failure | None:
    """The expected failure ``exc`` is, or None for an unexpected one."""
    if isinstance(exc, CommandRefused):
        return Failure(exc.code, str(exc), exc.hint)
    if isinstance(exc, WorkflowTimeout):
        hint = "wait longer with --timeout, or see `baton status`"
        if "no live worker consumes" in str(exc):
            hint = "start a worker for it: `baton worker --agents ...`"
        return Failure(TIMED_OUT, str(exc), hint)
    if isinstance(exc, DefinitionError):
        problems = "; ".join(f"{where}: {what}" if where else what for where, what in exc.problems)
        return Failure(REFUSED, f"invalid workflow definition: {problems}")
    if isinstance(exc, AgentModuleError):
        return Failure(REFUSED, str(exc), "fix it, or leave it out of BATON_AGENT_MODULES")
    if isinstance(exc, WorkflowNotFound):
        return Failure(REFUSED, str(exc), "`baton list` shows the recent workflows")
    if isinstance(exc, redis.AuthenticationError) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS"))
    ):
        return Failure(
            UNREACHABLE,
            f"Redis refused the credentials: {exc}",
            "check BATON_REDIS_PASSWORD, or the user and password in BATON_REDIS_URL",
        )
    if isinstance(exc, StateStoreError | redis.ConnectionError | redis.TimeoutError):
        return Failure(
            UNREACHABLE, _unreachable(exc), "is Redis running there? BATON_REDIS_URL names it"
        )
    if isinstance(exc, OperationalError):
        return Failure(UNREACHABLE, f"cannot reach the broker: {exc}", "check BATON_BROKER_URL")
    if isinstance(exc, ValidationError) and exc.title == "BatonSettings":
        return _settings(exc)
    if isinstance(exc, ValueError) and "Redis URL must specify" in str(exc):
        return Failure(UNREACHABLE, f"not a Redis URL: {exc}", URL_HINT)
    if isinstance(exc, BatonError):
        return Failure(REFUSED, str(exc))
    return None


def _unreachable(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("cannot reach"):
        return text
    try:
        url = get_settings().redis_url
    except ValidationError:
        url = None
    return f"cannot reach Redis{f' at {redact(url)}' if url else ''}: {text}"


def _settings(exc: ValidationError) -> Failure:
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else ""
    name = URL_FIELDS.get(field, f"BATON_{field.upper()}")
    code = UNREACHABLE if field in URL_FIELDS else REFUSED
    return Failure(code, f"{name}: {err['msg']}", "see the settings table in the README")
