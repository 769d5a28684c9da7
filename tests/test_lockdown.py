"""Locked down by default: the dashboard asks for credentials when they are set, and
neither the dashboard nor Flower serves beyond this machine without them (unless told
``--insecure``)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestration.client.embedded import free_port
from tests.helpers import eventually
from tests.test_client import baton

ROOT = Path(__file__).resolve().parents[1]
CREDENTIALS = "ops:s3cret:with-colon"  # a password may hold a colon


def status_of(url: str, credentials: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if credentials is not None:
        token = base64.b64encode(credentials.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, ""
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("WWW-Authenticate", "")


@pytest.fixture(scope="module")
def locked(worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dashboard with ``BATON_DASHBOARD_BASIC_AUTH`` set; ready when ``/healthz`` answers."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("locked") / "dashboard.log"
    env = {**os.environ, **worker_env, "BATON_DASHBOARD_BASIC_AUTH": CREDENTIALS}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "dashboard", "--port", str(port)],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            eventually(lambda: status_of(f"{base}/healthz")[0] == 200, 30, "the dashboard")
            yield base
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.mark.parametrize("path", ["/", "/workflow/x", "/api/workflows", "/metrics"])
def test_every_page_api_and_metrics_ask_for_the_credentials(locked: str, path: str) -> None:
    assert status_of(f"{locked}{path}") == (401, 'Basic realm="baton dashboard"')
    assert status_of(f"{locked}{path}", "ops:wrong")[0] == 401
    assert status_of(f"{locked}{path}", CREDENTIALS[:-1])[0] == 401
    assert status_of(f"{locked}{path}", CREDENTIALS) == (200, "")


def test_liveness_needs_no_credentials(locked: str) -> None:
    assert status_of(f"{locked}/healthz") == (200, "")


@pytest.mark.parametrize(
    ("command", "setting"),
    [(["dashboard", "--host", "0.0.0.0"], "BATON_DASHBOARD_BASIC_AUTH"),
     (["flower", "--address", "0.0.0.0"], "BATON_FLOWER_BASIC_AUTH")],
)  # fmt: skip
def test_serving_beyond_this_machine_without_credentials_is_refused(
    command: list[str], setting: str, worker_env: dict[str, str]
) -> None:
    env = {k: v for k, v in {**os.environ, **worker_env}.items() if k != setting}
    ran = baton(*command, env=env, timeout=60)
    assert ran.returncode == 2
    assert ran.stderr.strip().startswith("baton: refusing to serve")
    assert f"Set {setting}=user:password" in ran.stderr and "Traceback" not in ran.stderr
