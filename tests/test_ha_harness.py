"""The Sentinel harness (tests/ha.py) itself: real processes, real failovers.

The failover tests of the engine trust what this harness says (who the primary is, that a
failover is over, that replicas are in sync); these tests check each of those claims
against the data nodes themselves. Each test starts from a synced cluster, whatever ran
before it, and leaves one behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestration.client.embedded import free_port, redis_server_binary
from tests.ha import RedisHA
from tests.helpers import ROOT, eventually

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
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        state, pgid = stat(pid)
        if pgid in groups and state not in "Z-" and pid not in found:
            found[pid] = f"{pid} in process group {pgid}, state {state}"
    return sorted(found.values())


def stat(pid: int) -> tuple[str, int]:
    """A process's state and process group; ("-", 0) if it is gone. A zombie ("Z") has
    exited: init reaps it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return "-", 0
    return fields[0], int(fields[2])


def running(pids: list[int]) -> list[int]:
    return [pid for pid in pids if stat(pid)[0] not in "Z-"]


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
        assert ha.reaper is not None
        reaper = ha.reaper.pid
    finally:
        ha.stop()
    assert harness_processes(ha) == [] and running([reaper]) == []
    assert not any(n.frozen for n in ha.nodes)


def test_a_cluster_whose_owner_dies_is_killed_by_its_reaper(tmp_path: Path) -> None:
    """A test process killed outright (SIGKILL, a timeout) runs no teardown: the cluster's
    reaper kills it, a frozen primary included."""
    owner = f"""if True:
        import os, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from tests.ha import RedisHA
        ha = RedisHA(Path({str(tmp_path)!r})).start()
        ha.freeze_primary()
        print(*ha.pids, flush=True)
        os.kill(os.getpid(), 9)
    """
    ran = subprocess.run([sys.executable, "-c", owner], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert ran.returncode == -9, ran.stderr
    pids = [int(pid) for pid in ran.stdout.split()]
    assert len(pids) == 6
    eventually(lambda: not running(pids), 10, f"the reaper to kill {pids}")


# -- the compose file's HA profile -------------------------------------------------------

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
DATA = ["redis-primary", "redis-replica-1", "redis-replica-2"]
SENTINELS = ["sentinel-1", "sentinel-2", "sentinel-3"]
PASSWORD = "p@ss:w/rd#%? \"q'$x\\"  # (as tests/test_passwords.py: every awkward character)


def test_the_compose_ha_profile_fences_its_primary_and_points_baton_at_the_sentinels() -> None:
    ha = {name: s for name, s in COMPOSE.items() if "ha" in s.get("profiles", [])}
    clients = set(ha) - set(DATA) - set(SENTINELS)
    assert set(ha) == {*DATA, *SENTINELS, "worker-ha", "dashboard-ha"} and clients
    for name in DATA:
        script = ha[name]["command"][2]
        assert "min-replicas-to-write 1" in script and "min-replicas-max-lag 10" in script
        assert "requirepass" in script and "masterauth" in script
        replica_of = ha[name]["environment"].get("HA_REPLICAOF")
        assert replica_of == (None if name == "redis-primary" else "redis-primary 6379")
    for name in SENTINELS:
        script = ha[name]["command"][2]
        assert "sentinel monitor baton redis-primary 6379 2" in script
        assert "sentinel down-after-milliseconds baton 5000" in script
        assert "resolve-hostnames yes" in script and "announce-hostnames yes" in script
        assert "auth-pass baton" in script and script.endswith("--sentinel")
        assert ha[name]["environment"]["HA_NAME"] == name
    for name in [*DATA, *SENTINELS]:  # the password is on no command line
        assert "BATON_REDIS_PASSWORD" not in " ".join(ha[name]["command"])
        assert ha[name]["environment"]["REDISCLI_AUTH"].startswith("${BATON_REDIS_PASSWORD:?")
    url = "redis+sentinel://sentinel-1:26379,sentinel-2:26379,sentinel-3:26379/baton/0"
    for name in clients:
        env = ha[name]["environment"]
        assert env["BATON_REDIS_URL"] == url
        assert env["BATON_REDIS_PASSWORD"] == env["BATON_SENTINEL_PASSWORD"]
        assert set(ha[name]["depends_on"]) == set(SENTINELS)
    assert ha["dashboard-ha"]["ports"] == ["8766:8765"]  # (beside the other one's 8765)
    assert ha["worker-ha"]["command"] == ["baton", "worker"]


@dataclass
class ComposeNode:
    """One HA service's own ``command`` (compose's ``$$`` made ``$``), run by sh in a
    directory of its own (its /data), on a free loopback port; names become 127.0.0.1."""

    name: str
    directory: Path
    port: int
    primary_port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        service = COMPOSE[self.name]
        script = service["command"][2].replace("$$", "$")
        script = script.replace("redis-primary 6379", f"127.0.0.1 {self.primary_port}")
        here = f" --port {self.port} --bind 127.0.0.1"
        script = re.sub(r"(exec redis-server \S+( --sentinel)?)$", rf"\1{here}", script)
        env = {k: str(v) for k, v in service["environment"].items()}
        env |= {"REDISCLI_AUTH": PASSWORD, "HA_NAME": "127.0.0.1"}
        if "HA_REPLICAOF" in env:
            env["HA_REPLICAOF"] = f"127.0.0.1 {self.primary_port}"
        self.directory.mkdir(exist_ok=True)
        with (self.directory / "out.log").open("ab") as out:
            self.process = subprocess.Popen(
                ["sh", "-c", script],
                cwd=self.directory,
                env=env | {"PATH": f"{Path(redis_server_binary()).parent}:/usr/bin:/bin"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def client(self) -> redis.Redis[str]:
        return redis.Redis(port=self.port, password=PASSWORD, decode_responses=True,
                           socket_timeout=1, retry=Retry(NoBackoff(), 0))  # fmt: skip

    def conf(self) -> list[str]:
        return next(self.directory.glob("*.conf")).read_text().splitlines()


def test_the_compose_ha_profile_runs_and_restarts_into_the_same_topology(
    tmp_path: Path,
) -> None:
    """Its commands for real (Redis 6.2 here): the replicas and Sentinels find the
    primary with the password, and a node restarted on its volume keeps what it had."""
    primary_port = free_port()
    nodes = {
        name: ComposeNode(name, tmp_path / name, primary_port if name == DATA[0] else free_port(),
                          primary_port)
        for name in [*DATA, *SENTINELS]
    }  # fmt: skip
    data, sentinels = [nodes[n] for n in DATA], [nodes[n] for n in SENTINELS]
    try:
        for node in data:
            node.start()
        primary = data[0]

        def replicas_online() -> bool:
            info = primary.client().info("replication")
            return info.get("min_slaves_good_slaves") == 2

        eventually(replicas_online, 15, "the compose replicas to sync")
        for node in sentinels:
            node.start()

        def sentinels_agree() -> bool:
            for node in sentinels:
                master = node.client().execute_command("SENTINEL MASTER", "baton")
                if (master["port"], master["flags"]) != (primary_port, "master"):
                    return False
                if (master["num-slaves"], master["num-other-sentinels"]) != (2, 2):
                    return False
            return True

        eventually(sentinels_agree, 15, "the compose Sentinels to know each other")
        for node in data:
            assert node.client().config_get("min-replicas-*") == {
                "min-replicas-to-write": "1",
                "min-replicas-max-lag": "10",
            }

        # Restarted on its own files: the same role and identity, one password line.
        replica, sentinel = data[1], sentinels[0]
        myid = sentinel.client().execute_command("SENTINEL MYID")
        for node in (replica, sentinel):
            node.kill()
            node.start()

        def replica_synced() -> bool:  # (asked of the new process itself)
            info = replica.client().info("replication")
            return (info["role"], info["master_link_status"]) == ("slave", "up")

        eventually(replica_synced, 15, "the restarted replica to sync")
        eventually(replicas_online, 15, "the primary to see it online")
        eventually(sentinels_agree, 15, "the restarted Sentinel to rejoin")
        assert sentinel.client().execute_command("SENTINEL MYID") == myid
        for node in (replica, sentinel):  # (the password's lines replaced, not added to)
            conf = node.conf()
            assert sum(line.startswith("requirepass ") for line in conf) == 1
            assert conf[-1].startswith(("masterauth ", "sentinel auth-pass "))
        assert f"replicaof 127.0.0.1 {primary_port}" in replica.conf()
        assert sum(line.startswith("sentinel auth-pass ") for line in sentinel.conf()) == 1
    finally:
        for node in nodes.values():
            node.kill()
