"""Any Redis password works, special characters and all (issue 22): the compose file's
Redis takes it as its own, ``BATON_REDIS_PASSWORD`` carries it into every client's URL,
and no error line shows any part of it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import yaml

from orchestration import WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, RedisServer, free_port, redis_server_binary
from orchestration.settings import BatonSettings, redact
from tests.conftest import ROOT
from tests.helpers import eventually, step
from tests.test_cli_failures import one_line
from tests.test_client import baton

# Every character a URL or a redis.conf line could trip on.
PASSWORD = "p@ss:w/rd#%? \"q'$x\\"
WRONG = "Wr0ng@#%/?:= \"k'$\\z"


def pieces(secret: str) -> set[str]:
    """Every 4-character part of ``secret``, as written and percent-encoded."""
    return {s[i : i + 4] for s in (secret, quote(secret, safe="")) for i in range(len(s) - 3)}


# -- the setting ---------------------------------------------------------------------------


def test_the_password_setting_goes_into_the_redis_url_percent_encoded() -> None:
    s = BatonSettings(redis_url="redis://redis:6379/0", redis_password=PASSWORD)
    assert s.redis_url == f"redis://:{quote(PASSWORD, safe='')}@redis:6379/0"
    assert redis.connection.parse_url(s.redis_url)["password"] == PASSWORD
    assert s.broker_url is None  # (the broker is the Redis URL: it has the password)
    shown = redact(s.redis_url)
    assert shown == "redis://:***@redis:6379/0" and not pieces(PASSWORD) & {
        shown[i : i + 4] for i in range(len(shown) - 3)
    }
    assert PASSWORD not in repr(s)  # a SecretStr


def test_a_user_is_kept_and_a_url_with_its_own_password_keeps_it() -> None:
    s = BatonSettings(redis_url="rediss://ops@r:6380/2", redis_password="a b")
    assert s.redis_url == "rediss://ops:a%20b@r:6380/2"
    own = BatonSettings(redis_url="redis://:mine@r:6379/0", redis_password="other")
    assert own.redis_url == "redis://:mine@r:6379/0"
    assert BatonSettings(redis_url="redis://r:6379/0").redis_url == "redis://r:6379/0"


def test_a_redis_broker_without_a_password_gets_it_and_others_are_left_alone() -> None:
    s = BatonSettings(
        redis_url="redis://r:6379/0", broker_url="redis://b:6379/1", redis_password="p/w"
    )
    assert s.broker_url == "redis://:p%2Fw@b:6379/1"
    amqp = "amqp://guest:guest@mq:5672//"
    assert BatonSettings(broker_url=amqp, redis_password="p/w").broker_url == amqp
    own = "rediss://:theirs@b:6379/1"
    assert BatonSettings(broker_url=own, redis_password="p/w").broker_url == own


# -- the compose file's Redis, for real ----------------------------------------------------


@dataclass
class ComposeRedis:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"  # no password in it


@pytest.fixture(scope="module")
def compose_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeRedis]:
    """The redis service's own ``command`` (compose's ``$$`` made ``$``), run by sh with
    REDISCLI_AUTH set as compose sets it, on a free port of 127.0.0.1."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]
    sh, dash_c, script = service["command"]
    assert (sh, dash_c) == ("sh", "-c") and script.count("redis-server -") == 1
    port = free_port()
    script = script.replace("$$", "$").replace(
        "redis-server -", f"redis-server - --port {port} --bind 127.0.0.1"
    )
    home = tmp_path_factory.mktemp("compose-redis")
    path = f"{Path(redis_server_binary()).parent}{os.pathsep}/usr/bin:/bin"
    log = home / "redis.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["sh", "-c", script],
            cwd=home,
            env={"PATH": path, "REDISCLI_AUTH": PASSWORD},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        eventually(
            lambda: process.poll() is not None or "Ready to accept" in log.read_text(),
            30,
            "the compose redis to start",
        )
        assert process.poll() is None, log.read_text()
        yield ComposeRedis(port, process)
    finally:
        with contextlib.suppress(ProcessLookupError):  # (it may have failed to start)
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)


def test_the_compose_redis_takes_the_password_and_only_it(compose_redis: ComposeRedis) -> None:
    right = redis.Redis(port=compose_redis.port, password=PASSWORD)
    assert right.ping() and right.config_get("appendonly") == {"appendonly": "yes"}
    assert right.config_get("requirepass") == {"requirepass": PASSWORD}  # as written
    right.close()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=compose_redis.port, password=WRONG).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=compose_redis.port).ping()
    # Nor is it on any command line of what the service started.
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getpgid(int(proc.name)) == compose_redis.process.pid:
                assert PASSWORD.encode() not in (proc / "cmdline").read_bytes()
        except OSError:
            continue


def test_a_workflow_runs_with_the_password_setting_and_a_bare_url(
    compose_redis: ComposeRedis, tmp_path: Path
) -> None:
    env = {
        "BATON_REDIS_URL": compose_redis.url,
        "BATON_REDIS_PASSWORD": PASSWORD,
        "BATON_KEY_PREFIX": f"pw-{uuid.uuid4().hex[:6]}",
        "BATON_AGENT_MODULES": "tests.agents",
        "BATON_HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    settings = BatonSettings(
        redis_url=compose_redis.url,
        redis_password=PASSWORD,
        key_prefix=env["BATON_KEY_PREFIX"],
        agent_modules=["tests.agents"],
        home=tmp_path,
    )
    assert settings.redis_url
    orch = WorkflowOrchestrator(settings.redis_url, settings=settings, local_workers=False)
    # The worker is given the bare URL and the password setting, as compose gives it.
    pool = LocalWorkers(compose_redis.url, [["testkit"]], env=env, log_dir=tmp_path / "logs")
    try:
        pool.start(orch.app)
        wid = orch.run_workflow(
            {
                "name": "any-password",
                "steps": [
                    step("echo", "first", value=1),
                    {"parallel": [step("echo", "m1", value=2), step("echo", value=3)]},
                    step("echo", "last", value="done"),
                ],
            }
        )
        ctx = orch.wait(wid, timeout=60)
        assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
        assert ctx.shared_data["first"]["value"] == 1 and ctx.shared_data["m1"]["value"] == 2
        listed = baton("list", env={**os.environ, **env}, timeout=60)
        assert listed.returncode == 0 and wid in listed.stdout, listed.stderr
    finally:
        pool.stop()
        orch.close()
    logs = b"".join(p.read_bytes() for p in (tmp_path / "logs").iterdir())
    assert PASSWORD.encode() not in logs and quote(PASSWORD, safe="").encode() not in logs


def test_a_wrong_password_is_one_line_exit_3_showing_no_part_of_either(
    compose_redis: ComposeRedis,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env |= {"BATON_REDIS_URL": compose_redis.url, "BATON_REDIS_PASSWORD": WRONG,
            "PYTHONPATH": str(ROOT)}  # fmt: skip
    ran = baton("list", env=env, timeout=60)
    assert ran.returncode == 3, ran.stderr
    line = one_line(ran.stderr)
    assert "Redis refused the credentials" in line and "BATON_REDIS_PASSWORD" in line
    shown = {line[i : i + 4] for i in range(len(line) - 3)}
    assert not shown & (pieces(PASSWORD) | pieces(WRONG)), line


def test_the_embedded_redis_server_takes_any_password(tmp_path: Path) -> None:
    """``RedisServer`` (the tests', the benchmark's, ``baton demo``'s) writes the password
    into its configuration quoted: the server takes it exactly, and no other."""
    server = RedisServer(tmp_path, password=PASSWORD).start()
    try:
        client = redis.Redis(port=server.port, password=PASSWORD)
        assert client.config_get("requirepass")["requirepass"] == PASSWORD
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port, password="wrong").ping()
        client.close()
    finally:
        server.stop()
