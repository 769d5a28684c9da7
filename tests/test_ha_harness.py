"""The Sentinel harness (tests/ha.py) itself: real processes, real failovers.

The failover tests of the engine trust what this harness says (who the primary is, that a
failover is over, that replicas are in sync); these tests check each of those claims
against the data nodes themselves. Each test starts from a synced cluster, whatever ran
before it, and leaves one behind.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.ha import RedisHA
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(90)  # (a hung failover fails here, not at the suite's 300 s)


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisHA]:
    with RedisHA(tmp_path_factory.mktemp("ha")) as cluster:
        yield cluster


@pytest.fixture
def synced(ha: RedisHA) -> RedisHA:
    """The module's cluster, its replicas in sync with the primary."""
    ha.wait_replicas_synced()
    return ha


def harness_processes(ha: RedisHA) -> list[str]:
    """``pgrep -f`` lines of redis-servers on the cluster's ports, plus any live process
    in the process group of one it started (a forked sync or rewrite)."""
    ports = "|".join(str(port) for _, port in [*ha.sentinel_addrs, *(n.addr for n in ha.nodes)])
    listed = subprocess.run(
        ["pgrep", "-af", rf"redis-server.* 127\.0\.0\.1:({ports})( |$)"],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    found = {int(line.split()[0]): line for line in listed}
    groups = set(ha.pids)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # (gone meanwhile)
        state, pgid, pid = fields[0], int(fields[2]), int(stat.parent.name)
        if pgid in groups and state != "Z" and pid not in found:  # (a zombie has exited)
            found[pid] = f"{pid} in process group {pgid}, state {state}"
    return sorted(found.values())


def test_one_primary_two_online_replicas_and_three_sentinels(synced: RedisHA) -> None:
    primary = synced.primary()
    roles = {n.addr: n.client().execute_command("ROLE") for n in synced.nodes}
    assert [a for a, r in roles.items() if r[0] == "master"] == [primary]
    replicas = {a: r for a, r in roles.items() if a != primary}
    assert len(replicas) == 2
    for role in replicas.values():  # ['slave', host, port, state, offset]
        assert role[:4] == ["slave", "127.0.0.1", primary[1], "connected"]
    info = synced.node(primary).replication()
    online = [info[f"slave{i}"] for i in range(info["connected_slaves"])]
    assert sorted(s["port"] for s in online if s["state"] == "online") == sorted(
        port for _, port in replicas
    )
    assert info["min_slaves_good_slaves"] == 2
    for node in synced.nodes:  # the primary's fence, on every node: any may be primary
        fence = node.client().config_get("min-replicas-*")
        assert fence == {"min-replicas-to-write": "1", "min-replicas-max-lag": "10"}
    for sentinel in synced.sentinels:
        assert sentinel.primary(synced.service) == primary
        master = sentinel.ask("MASTER", synced.service)
        assert (master["quorum"], master["num-slaves"], master["num-other-sentinels"]) == (2, 2, 2)
        assert master["down-after-milliseconds"] == 1000
    hosts = ",".join(f"127.0.0.1:{p}" for _, p in synced.sentinel_addrs)
    assert synced.url == f"redis+sentinel://{hosts}/baton/0"


def test_a_write_on_the_primary_is_on_both_replicas(synced: RedisHA) -> None:
    primary = synced.primary_node()
    key, value = f"k-{uuid.uuid4().hex}", uuid.uuid4().hex
    with primary.client() as c:
        c.set(key, value)
        assert c.execute_command("WAIT", 2, 1000) == 2
    replicas = [n for n in synced.nodes if n is not primary]
    assert [n.client().get(key) for n in replicas] == [value, value]


def test_a_killed_primary_is_replaced_and_comes_back_as_a_replica(synced: RedisHA) -> None:
    old = synced.primary()
    key = f"acked-{uuid.uuid4().hex}"
    with synced.node(old).client() as c:
        c.set(key, "before")
        assert c.execute_command("WAIT", 2, 1000) == 2

    killed = synced.kill_primary()
    assert killed.addr == old and not killed.running
    started = time.monotonic()
    new = synced.wait_failover(old, timeout=10)
    took = time.monotonic() - started
    assert new != old and took < 10
    with synced.node(new).client() as c:
        assert c.execute_command("ROLE")[0] == "master"
        assert c.get(key) == "before"  # what two replicas acknowledged survives
        assert c.set(key, "after") is True  # writes pass the fence: a replica is online
        assert c.execute_command("WAIT", 1, 1000) == 1
    assert [s.primary(synced.service) for s in synced.sentinels] == [new] * 3

    synced.restart(killed)
    assert synced.wait_replicas_synced() == new
    with killed.client() as c:
        assert c.execute_command("ROLE")[:4] == ["slave", "127.0.0.1", new[1], "connected"]
        assert c.get(key) == "after"
        with pytest.raises(redis.ReadOnlyError):
            c.set(key, "on a replica")


def test_a_frozen_primary_is_replaced_then_thawed_into_a_replica(synced: RedisHA) -> None:
    old = synced.primary()
    frozen = synced.freeze_primary()
    frozen_at = time.monotonic()
    try:
        new = synced.wait_failover(old, timeout=10)
        assert time.monotonic() - frozen_at > synced.down_after_ms / 1000
    finally:
        synced.thaw(frozen)
    assert new != old and not frozen.frozen

    # Thawed, it still says it is the primary until a Sentinel demotes it (seconds), but
    # its replicas have left it: the fence refuses every write meanwhile.
    with frozen.client() as c:
        eventually(lambda: c.info("replication")["connected_slaves"] == 0, 5, "replicas gone")
        role = c.execute_command("ROLE")[0]
        assert role == "master"
        with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
            c.set(f"lost-{uuid.uuid4().hex}", "never acknowledged")

    assert synced.wait_replicas_synced(timeout=20) == new
    with frozen.client() as c:
        assert c.execute_command("ROLE")[:4] == ["slave", "127.0.0.1", new[1], "connected"]
    assert synced.primary() == new


def test_passwords_and_a_stop_that_leaves_nothing_running(tmp_path: Path) -> None:
    """Data nodes and Sentinels each with their own password (any characters), and
    ``stop`` with a primary frozen: every process gone, children too."""
    password, sentinel_password = "p@ss:w/rd#%? \"q'$x\\", "s3ntinel pass"
    ha = RedisHA(tmp_path, password=password, sentinel_password=sentinel_password).start()
    try:
        assert ha.url.startswith("redis+sentinel://:p%40ss%3Aw%2Frd%23%25%3F%20%22q%27%24x%5C@")
        node, sentinel = ha.primary_node(), ha.sentinels[0]
        once = Retry(NoBackoff(), 0)  # (an AuthenticationError is retried by default)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=node.port, password=sentinel_password, retry=once).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=sentinel.port, password=password, retry=once).ping()
        assert ha.wait_replicas_synced() == node.addr  # (masterauth)
        assert {int(line.split()[0]) for line in harness_processes(ha)} >= set(ha.pids)
        assert node.client().ping() and sentinel.client().ping()
        ha.freeze_primary()
    finally:
        ha.stop()
    assert harness_processes(ha) == []
    assert not any(n.frozen for n in ha.nodes)
