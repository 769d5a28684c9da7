"""``baton doctor`` and ``/metrics``' Redis gauges, against real servers: the session's
standalone redis-server, nothing listening at all, and a Sentinel cluster (tests/ha.py:
three data nodes, three Sentinels) before and after its primary is killed.

``baton`` runs as a subprocess, as a user runs it: its exit code (0 writes can be
acknowledged, 3 not, or Redis unreachable), its report on stdout, one line on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from orchestration.client.embedded import RedisServer, free_port
from orchestration.settings import BatonSettings
from orchestration.state.connection import connect
from orchestration.state.keys import metrics_key
from tests.browser import http
from tests.ha import RedisHA
from tests.helpers import eventually
from tests.test_cli_failures import one_line
from tests.test_client import baton
from tests.test_dashboard import scrape
from workers.dashboard.prometheus import render_metrics
from workers.doctor import Gauges, LiveProbe

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "p@ss:w/rd"  # the data nodes': never printed, in any form


def doctor(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    ran = baton("doctor", *args, env={**env, **extra}, timeout=60)
    assert "Traceback" not in ran.stderr, ran.stderr
    for text in (PASSWORD, "p%40ss"):
        assert text not in ran.stdout + ran.stderr
    assert all(len(line) <= 80 for line in ran.stdout.splitlines()), ran.stdout
    return ran


def facts(stdout: str) -> dict[str, str]:
    """The report's ``name  value`` lines, before its tables."""
    head = stdout.split("\n\n", 1)[0]
    return dict(line.split(None, 1) for line in head.splitlines())


# --------------------------------------------------------------------------- standalone


def test_standalone_is_ok_and_a_missing_replica_is_exit_3(
    worker_env: dict[str, str], redis_server: RedisServer
) -> None:
    ran = doctor(worker_env)
    assert ran.returncode == 0 and ran.stderr == "", ran.stderr
    seen = facts(ran.stdout)
    assert seen["mode"] == "standalone"
    assert seen["primary"] == f"127.0.0.1:{redis_server.port} (role master)"
    assert seen["replicas"] == "0 of 0 online"
    assert ran.stdout.rstrip().endswith("OK: writes can be acknowledged: 0 replicas online, "
                                        "writes wait for 0")  # fmt: skip

    ran = doctor(worker_env, BATON_MIN_REPLICAS="1")
    assert ran.returncode == 3
    reason = "writes cannot be acknowledged: 0 of 1 replicas online"
    assert ran.stdout.rstrip().endswith(f"NOT OK: {reason}")
    assert one_line(ran.stderr) == (
        f"baton: {reason} (hint: start a replica, or lower BATON_MIN_REPLICAS)"
    )
    report = json.loads(doctor(worker_env, "--json", BATON_MIN_REPLICAS="1").stdout)
    assert report["ok"] is False and report["write_replicas"] == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()}/0",
         "cannot reach Redis at redis://:***@127.0.0.1:"),
        (f"redis+sentinel://:x@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/baton/0",
         "no Sentinel answers for redis+sentinel://:***@127.0.0.1:"),
    ],
    ids=["redis", "sentinel"],
)  # fmt: skip
def test_an_unreachable_redis_is_one_line_and_exit_3(
    url: str, expected: str, worker_env: dict[str, str]
) -> None:
    ran = doctor(worker_env, BATON_REDIS_URL=url)
    assert ran.returncode == 3 and ran.stdout == ""
    line = one_line(ran.stderr)
    assert expected in line and "(hint: " in line


# --------------------------------------------------------------------------- /metrics


def test_metrics_count_writes_not_replicated_and_show_the_redis_gauges(
    worker_env: dict[str, str], raw_redis: redis.Redis[bytes], tmp_path: Path
) -> None:
    key = metrics_key(worker_env["BATON_KEY_PREFIX"])
    raw_redis.hincrby(key, "writes_not_replicated|commit", 2)  # as the scripts count them
    port = free_port()
    with (tmp_path / "dashboard.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "dashboard", "--port", str(port)],
            env={**os.environ, **worker_env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        eventually(lambda: http(f"{base}/healthz", timeout=1)[0] == 200, 30, "the dashboard")
        got = scrape(base)
    finally:
        proc.terminate()
        proc.wait(10)
    logged = (tmp_path / "dashboard.log").read_text()
    assert "Traceback" not in logged and " ERROR " not in logged, logged
    assert got[("baton_writes_not_replicated_total", frozenset({("script", "commit")}))] >= 2
    assert got[("baton_redis_replicas_online", frozenset())] == 0
    assert not [name for name, _ in got if name == "baton_redis_failovers_total"]


def test_the_gauges_render_as_prometheus_text() -> None:
    text = render_metrics(
        {"writes_not_replicated|mapcommit": 3.0},
        Gauges(replicas_online=1, replica_lags={"10.0.0.2:6379": 1}, failovers=4),
    )
    assert '\nbaton_writes_not_replicated_total{script="mapcommit"} 3\n' in text
    assert "# TYPE baton_writes_not_replicated_total counter\n" in text
    assert "# TYPE baton_redis_replicas_online gauge\nbaton_redis_replicas_online 1\n" in text
    assert '\nbaton_redis_replica_lag_seconds{replica="10.0.0.2:6379"} 1\n' in text
    assert "# TYPE baton_redis_failovers_total counter\nbaton_redis_failovers_total 4\n" in text


# --------------------------------------------------------------------------- Sentinel


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHA]:
    with RedisHA(tmp_path_factory.mktemp("ha"), password=PASSWORD) as cluster:
        yield cluster


def gauges(ha: RedisHA) -> Gauges:
    """``/metrics``' gauges as the dashboard reads them (its client follows the primary)."""
    settings = BatonSettings(redis_url=ha.url)
    client = connect(ha.url, settings=settings)
    probe = LiveProbe(client, ha.url, settings)
    try:
        return probe()
    finally:
        probe.close()
        client.close()


def test_sentinel_shows_the_primary_its_replicas_and_the_sentinels(
    ha: RedisHA, worker_env: dict[str, str]
) -> None:
    env = {**worker_env, "BATON_REDIS_URL": ha.url}
    ran = doctor(env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    host, port = ha.primary()
    seen = facts(ran.stdout)
    assert seen["mode"] == "sentinel, service baton (quorum 2, config-epoch 0)"
    assert seen["primary"] == f"{host}:{port} (role master)"
    assert seen["sentinels"] == "3 of 3 reachable, 3 agree on the primary"
    assert seen["replicas"] == "2 of 2 online"
    assert seen["fence"] == "min-replicas-to-write 1, min-replicas-max-lag 10s"
    assert seen["writes"] == "wait for 1 replica, up to 1000 ms (BATON_MIN_REPLICAS=1)"
    for node in ha.nodes[1:]:
        assert f"{node.addr[0]}:{node.addr[1]}  online" in ran.stdout
    live = gauges(ha)
    assert live.replicas_online == 2 and len(live.replica_lags) == 2 and live.failovers == 0


def test_after_a_failover_the_new_primary_and_its_one_replica_are_ok(
    ha: RedisHA, worker_env: dict[str, str]
) -> None:
    old = ha.kill_primary()
    new = ha.wait_failover(old.addr)

    def settled() -> dict[str, Any] | None:
        """The doctor's report once every Sentinel has caught up with the failover (the
        last may still be switching, or the replica still syncing, when it is first run)."""
        ran = doctor({**worker_env, "BATON_REDIS_URL": ha.url}, "--json")
        got: dict[str, Any] = json.loads(ran.stdout) if ran.stdout.strip() else {}
        return got if ran.returncode == 0 and got.get("agreeing") == 3 else None

    report = eventually(settled, 20, "doctor to see the failover settled")
    assert report["mode"] == "sentinel" and report["ok"] is True
    assert report["primary"] == f"{new[0]}:{new[1]}" != f"{old.addr[0]}:{old.addr[1]}"
    assert [r["state"] for r in report["replicas"]] == ["online"]
    assert report["replicas"][0]["lag_seconds"] is not None
    assert report["quorum"] == 2 and report["agreeing"] == 3 and report["config_epoch"] >= 1
    assert all(s["reachable"] for s in report["sentinels"])
    live = gauges(ha)
    assert live.replicas_online == 1 and live.failovers == report["config_epoch"]
