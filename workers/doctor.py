"""``baton doctor``: can Baton's Redis acknowledge a write now, and if not, why not.

A write counts once ``BATON_MIN_REPLICAS`` replicas have it (``WAIT``), and on Sentinel
once it went to the primary a majority of the Sentinels name; a primary with a fence
(``min-replicas-to-write``) refuses writes when too few replicas keep up. So the report
shows the primary, its replicas as it sees them (``INFO replication``), the Sentinels and
what each names, the fence and the WAIT setting, and one verdict line. Every client here
has short timeouts and no failover retries: a probe says what is, now, and never waits a
failover out (``connect`` does that for the workers).

The same pieces feed ``/metrics``' live gauges (:class:`LiveProbe`), a few round trips per
scrape.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import click
import redis
from pydantic import BaseModel
from redis.backoff import NoBackoff
from redis.retry import Retry
from rich.console import Console
from rich.table import Table

from orchestration.errors import CommandRefused
from orchestration.settings import BatonSettings, get_settings, redact
from orchestration.state.connection import SentinelTarget, sentinel_target
from workers.failures import UNREACHABLE
from workers.render_tables import Column, fitted

#: A probe's socket timeouts (s): long enough for a loaded server, short enough for a
#: command someone waits on (a frozen node costs this, once per retry).
PROBE_TIMEOUT = 1.0


class ReplicaView(BaseModel):
    """A replica as the primary sees it (a ``slaveN`` line of ``INFO replication``)."""

    address: str
    state: str  # online, wait_bgsave, send_bulk...: only online ones take writes
    offset: int = 0
    lag_seconds: int | None = None  # seconds since its last acknowledgement


class SentinelView(BaseModel):
    """One listed Sentinel: whether it answered, and which primary it names."""

    address: str
    reachable: bool
    primary: str | None = None
    config_epoch: int | None = None
    error: str = ""


class DoctorReport(BaseModel):
    """What ``probe`` found and its verdict (``--json`` prints this)."""

    mode: Literal["standalone", "sentinel"]
    service: str | None = None
    primary: str
    primary_answers: bool = True
    role: str | None = None
    replicas: list[ReplicaView] = []
    sentinels: list[SentinelView] = []
    quorum: int | None = None
    other_sentinels: int | None = None
    config_epoch: int | None = None  # bumped by each failover
    agreeing: int = 0  # Sentinels naming ``primary``
    min_replicas_to_write: int | None = None  # the fence (None: CONFIG refused)
    min_replicas_max_lag: int | None = None
    write_replicas: int = 0  # WAIT for this many (BATON_MIN_REPLICAS)
    replica_timeout_ms: int = 1000
    ok: bool = False
    verdict: str = ""
    hint: str = ""

    @property
    def online(self) -> int:
        return sum(r.state == "online" for r in self.replicas)


class Gauges(BaseModel):
    """``/metrics``' live figures: replicas online, their lags, failovers so far."""

    replicas_online: int = 0
    replica_lags: dict[str, int] = {}
    failovers: int | None = None  # the Sentinels' config-epoch (None on redis://)


# --------------------------------------------------------------------------- clients


def node_client(host: str, port: int, password: str | None, **kw: Any) -> redis.Redis[str]:
    """A client of one node (a data node or a Sentinel): short timeouts, one retry."""
    return redis.Redis(
        host=host, port=port, password=password, decode_responses=True,
        socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT,
        retry=Retry(NoBackoff(), 1), **kw,
    )  # fmt: skip


def sentinel_clients(target: SentinelTarget, settings: BatonSettings) -> list[redis.Redis[str]]:
    secret = settings.sentinel_password
    password = secret.get_secret_value() if secret else None
    return [node_client(host, port, password) for host, port in target.sentinels]


def address(client: redis.Redis[Any]) -> str:
    kw = client.connection_pool.connection_kwargs
    return str(kw["path"]) if "path" in kw else f"{kw.get('host')}:{kw.get('port')}"


# --------------------------------------------------------------------------- pieces


def replicas_seen(info: Mapping[str, Any]) -> list[ReplicaView]:
    """The replicas in a parsed ``INFO replication`` (redis-py makes each ``slaveN``
    line a dict)."""
    found = []
    for key, value in info.items():
        if key.startswith("slave") and key[5:].isdigit() and isinstance(value, dict):
            lag = value.get("lag")
            found.append(ReplicaView(
                address=f"{value.get('ip')}:{value.get('port')}", state=str(value.get("state")),
                offset=int(value.get("offset", 0)), lag_seconds=None if lag is None else int(lag),
            ))  # fmt: skip
    return sorted(found, key=lambda r: r.address)


def fence(client: redis.Redis[str]) -> tuple[int | None, int | None]:
    """The primary's ``min-replicas-to-write`` and ``min-replicas-max-lag``; (None, None)
    where CONFIG is renamed or not allowed (a managed Redis often refuses it)."""
    try:
        got = client.config_get("min-replicas-*")
    except redis.ResponseError:
        return None, None
    to_write, max_lag = got.get("min-replicas-to-write"), got.get("min-replicas-max-lag")
    return (None if to_write is None else int(to_write),
            None if max_lag is None else int(max_lag))  # fmt: skip


def ask_sentinel(client: redis.Redis[str], service: str) -> tuple[SentinelView, dict[str, Any]]:
    """What one Sentinel says of ``service``: the primary it names (``get-master-addr-by-
    name``) and its ``SENTINEL master`` fields (quorum, config-epoch...)."""
    where = address(client)
    try:
        named = client.sentinel_get_master_addr_by_name(service)  # type: ignore[no-untyped-call]
        master = client.sentinel_master(service) if named else {}  # type: ignore[no-untyped-call]
    except redis.RedisError as exc:
        return SentinelView(address=where, reachable=False, error=" ".join(str(exc).split())), {}
    primary = f"{named[0]}:{named[1]}" if named else None
    epoch = master.get("config-epoch")
    view = SentinelView(address=where, reachable=True, primary=primary,
                        config_epoch=None if epoch is None else int(epoch))  # fmt: skip
    return view, master


def failovers(sentinels: Sequence[redis.Redis[str]], service: str) -> int | None:
    """The service's config-epoch as the first Sentinel that answers reports it."""
    for client in sentinels:
        view, _ = ask_sentinel(client, service)
        if view.config_epoch is not None:
            return view.config_epoch
    return None


# --------------------------------------------------------------------------- the probe


def probe(settings: BatonSettings | None = None) -> DoctorReport:
    """Look at the Redis ``settings`` name and judge whether a write can be acknowledged.

    Raises :class:`CommandRefused` (exit 3) when there is nothing to report on: no
    Sentinel answers, or they know no such service; a standalone server that does not
    answer raises redis-py's error (``failure_of`` makes it one line)."""
    from orchestration.client.embedded import resolve_redis_url

    settings = settings or get_settings()
    url = resolve_redis_url(settings)
    target = sentinel_target(url)
    report = DoctorReport(
        mode="sentinel" if target else "standalone", primary="",
        write_replicas=settings.write_replicas, replica_timeout_ms=settings.replica_timeout_ms,
    )  # fmt: skip
    if target is None:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=PROBE_TIMEOUT,
            socket_connect_timeout=PROBE_TIMEOUT, retry=Retry(NoBackoff(), 1),
        )  # fmt: skip
        report.primary = address(client)
        with client:
            look_at_primary(report, client)
    else:
        ask_sentinels(report, target, settings)
        host, _, port = report.primary.rpartition(":")
        with node_client(host, int(port), target.password, username=target.username,
                         db=target.db) as client:  # fmt: skip
            try:
                look_at_primary(report, client)
            except redis.AuthenticationError:
                raise  # (a ConnectionError to redis-py: refused credentials, said as such)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                report.primary_answers = False
                report.verdict = f"the primary {report.primary} does not answer: {exc}"
                report.hint = "a failover may be under way: run `baton doctor` again"
    judge(report, len(target.sentinels) if target else 0)
    return report


def ask_sentinels(report: DoctorReport, target: SentinelTarget, settings: BatonSettings) -> None:
    """Fill in the Sentinels' views, and the primary most of them name."""
    report.service = target.service
    answers = []
    for client in sentinel_clients(target, settings):
        with client:
            answers.append(ask_sentinel(client, target.service))
    report.sentinels = [view for view, _ in answers]
    named = Counter(v.primary for v in report.sentinels if v.primary)
    if not named:
        reachable = [v for v in report.sentinels if v.reachable]
        if reachable:
            raise CommandRefused(
                f"no Sentinel knows the service {target.service!r}",
                "check the service name in BATON_REDIS_URL (redis+sentinel://.../<service>/<db>)",
                UNREACHABLE,
            )
        errors = "; ".join(f"{v.address}: {v.error}" for v in report.sentinels)
        raise CommandRefused(
            f"no Sentinel answers for {redact(settings.redis_url or '')}: {errors}",
            "are the Sentinels running? BATON_REDIS_URL lists them", UNREACHABLE,
        )  # fmt: skip
    report.primary, report.agreeing = named.most_common(1)[0]
    master = next(m for v, m in answers if v.primary == report.primary)
    report.quorum = master.get("quorum")
    report.other_sentinels = master.get("num-other-sentinels")
    report.config_epoch = max(v.config_epoch or 0 for v in report.sentinels)


def look_at_primary(report: DoctorReport, client: redis.Redis[str]) -> None:
    info = client.info("replication")
    report.role = str(info.get("role"))
    report.replicas = replicas_seen(info)
    report.min_replicas_to_write, report.min_replicas_max_lag = fence(client)


def judge(report: DoctorReport, listed: int) -> None:
    """The verdict: the first reason a write cannot be acknowledged now, or OK."""
    need, online = report.write_replicas, report.online
    majority = listed // 2 + 1
    reachable = sum(s.reachable for s in report.sentinels)
    good = sum(
        r.state == "online" and (r.lag_seconds or 0) <= (report.min_replicas_max_lag or 0)
        for r in report.replicas
    )
    fenced = report.min_replicas_to_write or 0
    if listed and reachable < majority:
        why = f"only {reachable} of {listed} Sentinels reachable ({majority} needed)"
        hint = "start the Sentinels that are down, or check the network to them"
    elif listed and report.agreeing < majority:
        why = (f"the Sentinels do not agree on the primary: {report.agreeing} of {listed} "
               f"name {report.primary} ({majority} needed)")  # fmt: skip
        hint = "a failover may be under way: run `baton doctor` again"
    elif not report.primary_answers:
        why, hint = report.verdict, report.hint
    elif report.role != "master":
        why = f"{report.primary} is a replica ({report.role}), not a primary"
        hint = "point BATON_REDIS_URL at the primary, or at its Sentinels"
    elif online < need:
        why = f"writes cannot be acknowledged: {online} of {need} replicas online"
        hint = "start a replica, or lower BATON_MIN_REPLICAS"
    elif good < fenced:
        why = (f"the primary refuses writes: {good} replicas within min-replicas-max-lag "
               f"of the {fenced} its min-replicas-to-write needs")  # fmt: skip
        hint = "bring a replica back, or lower the primary's min-replicas-to-write"
    else:
        report.ok, report.hint = True, ""
        report.verdict = (f"writes can be acknowledged: {online} replica{'s' * (online != 1)} "
                          f"online, writes wait for {need}")  # fmt: skip
        return
    report.ok, report.verdict, report.hint = False, why, hint


class LiveProbe:
    """``/metrics``' gauges, per scrape: ``INFO replication`` on the dashboard's own
    client (which follows the primary) and, on Sentinel, one Sentinel's config-epoch."""

    def __init__(self, client: redis.Redis[Any], url: str, settings: BatonSettings) -> None:
        self.client = client
        target = sentinel_target(url)
        self.service = target.service if target else ""
        self.sentinels = sentinel_clients(target, settings) if target else []

    def __call__(self) -> Gauges:
        info = self.client.info("replication")
        replicas = replicas_seen(info)
        online = [r for r in replicas if r.state == "online"]
        return Gauges(
            replicas_online=len(online),
            replica_lags={r.address: r.lag_seconds or 0 for r in online},
            failovers=failovers(self.sentinels, self.service) if self.sentinels else None,
        )

    def close(self) -> None:
        for client in self.sentinels:
            client.close()


# --------------------------------------------------------------------------- output


def render(report: DoctorReport, width: int = 80) -> str:
    """The report as text at most ``width`` columns wide: the facts, one a line, the
    replicas and the Sentinels as tables, the verdict last."""
    facts = Table(show_header=False, box=None, pad_edge=False)
    facts.add_column(no_wrap=True)
    facts.add_column(overflow="fold")
    mode: str = report.mode
    if report.service:
        mode += f", service {report.service} (quorum {report.quorum}, config-epoch "
        mode += f"{report.config_epoch})"
    facts.add_row("mode", mode)
    state = f"role {report.role}" if report.primary_answers else "does not answer"
    facts.add_row("primary", f"{report.primary} ({state})")
    if not report.primary_answers:
        facts.add_row("fence", "unknown (the primary does not answer)")
    elif report.min_replicas_to_write is None:
        facts.add_row("fence", "unknown (CONFIG refused)")
    else:
        facts.add_row("fence", f"min-replicas-to-write {report.min_replicas_to_write}, "
                               f"min-replicas-max-lag {report.min_replicas_max_lag}s")  # fmt: skip
    need = report.write_replicas
    facts.add_row("writes", f"wait for {need} replica{'s' * (need != 1)}, up to "
                  f"{report.replica_timeout_ms} ms (BATON_MIN_REPLICAS={need})" if need else
                  "count once the primary has them (BATON_MIN_REPLICAS=0)")  # fmt: skip
    if report.sentinels:
        reachable = sum(s.reachable for s in report.sentinels)
        facts.add_row("sentinels", f"{reachable} of {len(report.sentinels)} reachable, "
                                   f"{report.agreeing} agree on the primary")  # fmt: skip
    if report.primary_answers:
        facts.add_row("replicas", f"{report.online} of {len(report.replicas)} online")
    parts: list[Any] = [facts]
    if report.replicas:
        parts.append(fitted(
            [Column("replica", whole=True), Column("state", whole=True),
             Column("lag", whole=True), Column("offset", whole=True)],
            [[r.address, r.state, "–" if r.lag_seconds is None else f"{r.lag_seconds}s",
              str(r.offset)] for r in report.replicas], width,
        ))  # fmt: skip
    if report.sentinels:
        parts.append(fitted(
            [Column("sentinel", whole=True), Column("reachable", whole=True),
             Column("names as primary", least=12)],
            [[s.address, "yes" if s.reachable else "no",
              s.primary or (s.error if not s.reachable else "–")] for s in report.sentinels],
            width,
        ))  # fmt: skip
    verdict = f"{'OK' if report.ok else 'NOT OK'}: {report.verdict}"
    out = Console(file=io.StringIO(), width=width, markup=False, highlight=False,
                  color_system=None)  # fmt: skip
    for part in parts:
        out.print(part)
        out.print()
    out.print(verdict)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in text.splitlines())


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
def doctor(as_json: bool) -> None:
    """Check that Baton's Redis can acknowledge writes now: the primary, its replicas and
    their lag, the Sentinels (reachable, agreeing, quorum), the primary's fence and the
    WAIT setting.

    Exit codes: 0 writes can be acknowledged; 3 they cannot (too few replicas online,
    Sentinels unreachable or disagreeing, the primary silent or fenced), the reason on
    stderr as one line, or Redis cannot be reached at all (one line, no report)."""
    report = probe()
    click.echo(report.model_dump_json(indent=2) if as_json else render(report))
    if not report.ok:
        raise CommandRefused(report.verdict, report.hint, UNREACHABLE)
