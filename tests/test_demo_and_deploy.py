"""The zero-configuration demo and the compose file, as a new user meets them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agents.registry import BUILTIN_MODULES

ROOT = Path(__file__).resolve().parents[1]


def processes_in(directory: Path) -> set[int]:
    """Pids of processes running in ``directory`` (the demo's, and all it started)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cwd").resolve() == directory.resolve():
                found.add(int(proc.name))
        except OSError:
            continue
    return found


def test_demo_runs_with_no_configuration_and_cleans_up(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env["PYTHONPATH"] = str(ROOT)

    demo = subprocess.run(
        [sys.executable, "-m", "workers.cli", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    assert "Data Analysis Pipeline" in out and "Customer Intelligence" in out
    assert out.count(": completed in ") == 2
    assert "parallel group 'customer_insights': 4/4 succeeded" in out
    reports = [
        line.split("report: ", 1)[1].strip() for line in out.splitlines() if "report: " in line
    ]
    assert len(reports) == 2
    for report in reports:
        assert Path(report).is_absolute() and Path(report).read_text().startswith("# ")
    # One definition of revenue (the records analysed): every cleaned record in the first,
    # all but the 15 that failed validation in the second, which says so.
    first, second = out.split("\nCustomer Intelligence ", 2)[1:]
    assert "total_revenue: 1595784.98" in first and "records_failing_validation" not in first
    assert "total_revenue: 1586443.81" in second and "records_failing_validation: 15" in second
    assert "15 records failed validation" in Path(reports[1]).read_text()
    # Everything the demo started (embedded redis-server, workers) is gone.
    assert processes_in(tmp_path) == set()


def test_compose_file_validates_and_runs_a_worker_per_agent() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    # (agents.baton is the engine's own: its steps go to baton.control, which every worker
    # consumes)
    agents = {m.rsplit(".", 1)[1] for m in BUILTIN_MODULES if m != "agents.baton"}
    assert agents <= services.keys()
    for agent in agents:
        env = services[agent]["environment"]
        assert env["BATON_WORKER_AGENTS"] == agent
        assert env["BATON_WORKER_HOSTNAME"] == "worker@%h"  # unique per replica (--scale)
        # The password goes on its own, not into the URL, where its characters would break it
        assert env["BATON_REDIS_URL"] == "redis://redis:6379/0"
        assert env["BATON_REDIS_PASSWORD"].startswith("${BATON_REDIS_PASSWORD:?")
        assert services[agent]["command"] == ["baton", "worker"]
        assert "inspect ping" in services[agent]["healthcheck"]["test"][1]
    redis_cmd = " ".join(services["redis"]["command"])
    assert "appendonly yes" in redis_cmd and "requirepass" in redis_cmd
    assert "BATON_REDIS_PASSWORD" not in redis_cmd  # the password is on no command line
    assert services["analyzer"]["stop_grace_period"] == "10m"  # a long step may finish
    assert "/healthz" in services["dashboard"]["healthcheck"]["test"][-1]
    assert services["flower"]["ports"] == ["5555:5555"]
    assert "BATON_FLOWER_BASIC_AUTH" in services["flower"]["environment"]
    assert services["dashboard"]["ports"] == ["8765:8765"]

    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        cmd = ["docker", "compose", "config", "-q"]
    elif shutil.which("docker-compose"):
        cmd = ["docker-compose", "config", "-q"]
    else:
        pytest.skip(
            "neither `docker compose` nor `docker-compose` is installed (.ci/run installs it)"
        )
    secrets = {
        "BATON_REDIS_PASSWORD": "p@ss:w/rd#%? \"q'$x\\",  # (tests/test_passwords.py runs it)
        "BATON_FLOWER_BASIC_AUTH": "ops:f",
        "BATON_DASHBOARD_BASIC_AUTH": "ops:d",
    }
    bare = {k: v for k, v in os.environ.items() if k not in secrets}
    checked = subprocess.run(cmd, cwd=ROOT, env={**bare, **secrets}, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    shown = subprocess.run(cmd[:-1], cwd=ROOT, env={**bare, **secrets}, capture_output=True,
                           text=True, check=True)  # fmt: skip
    resolved = yaml.safe_load(shown.stdout)["services"]  # (a literal $ shown as $$)
    password = secrets["BATON_REDIS_PASSWORD"].replace("$", "$$")
    assert resolved["redis"]["environment"]["REDISCLI_AUTH"] == password
    assert all(resolved[a]["environment"]["BATON_REDIS_PASSWORD"] == password for a in agents)
    for name in secrets:  # no default passwords: each missing secret stops compose, named
        missing = {**bare, **{k: v for k, v in secrets.items() if k != name}}
        refused = subprocess.run(cmd, cwd=ROOT, env=missing, capture_output=True, text=True)
        assert refused.returncode != 0 and name in refused.stderr, refused.stderr


def test_a_compose_services_environment_chooses_its_workers_agents_and_pool(
    worker_env: dict[str, str],
) -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    llm = services["llm"]["environment"]
    env = {**worker_env, **{k: v for k, v in llm.items() if k.startswith("BATON_WORKER_")}}
    worker = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker"],
        env=env | {"PATH": "/usr/bin:/bin", "BATON_WORKER_HOSTNAME": "compose-check@%h"},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert worker.stderr is not None
        first = worker.stderr.readline()
    finally:
        worker.kill()
        worker.wait()
    assert first.startswith("baton worker compose-check@")
    assert "queues agent.llm,baton.control; concurrency 200 (asyncio pool)" in first
