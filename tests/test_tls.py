"""TLS end to end: ``rediss://`` for broker, results and state, with a password."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from orchestration import WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, free_port
from orchestration.settings import BatonSettings
from tests.conftest import ROOT
from tests.helpers import eventually, step

SYSTEM_REDIS = Path("/usr/bin/redis-server")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def test_a_tls_redis_with_a_password_works_end_to_end(
    tmp_path: Path, worker_env: dict[str, str]
) -> None:
    if not shutil.which("openssl") or not SYSTEM_REDIS.exists():
        pytest.skip(
            "needs openssl and a TLS-enabled redis-server (Debian's, /usr/bin/redis-server)"
        )
    # Given: a certificate authority, a server certificate for 127.0.0.1, a TLS-only Redis.
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=baton-test-ca",
        cwd=tmp_path,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=tmp_path,
    )
    (tmp_path / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "ext",
        cwd=tmp_path,
    )
    port, password = free_port(), "tls-secret-pw"
    server = subprocess.Popen(
        [
            str(SYSTEM_REDIS),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.crt",
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"rediss://:{password}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={tmp_path}/ca.crt"
    try:
        eventually(lambda: redis.Redis.from_url(url).ping(), 20, "the TLS Redis")
        settings = BatonSettings(
            redis_url=url, key_prefix="tls", home=tmp_path, agent_modules=["tests.agents"]
        )
        orch = WorkflowOrchestrator(url, settings=settings, local_workers=False)
        env = {
            **worker_env,
            "BATON_REDIS_URL": url,
            "BATON_HOME": str(tmp_path),
            "BATON_KEY_PREFIX": "tls",
            "PYTHONPATH": str(ROOT),
        }
        workers = LocalWorkers(
            url, [["testkit"]], concurrency=2, env=env, log_dir=tmp_path / "logs"
        )
        workers.start(orch.app)
        try:
            # When: a workflow with a chord runs over TLS...
            ctx = orch.wait(
                orch.run_workflow(
                    {
                        "steps": [
                            step("echo", "a", value=1),
                            {
                                "parallel": [step("echo", "m1"), step("echo", "m2")],
                                "output_key": "g",
                            },
                        ]
                    }
                ),
                timeout=60,
            )
        finally:
            workers.stop()
            orch.close()
        # Then: it completes, and the password is in no log.
        assert ctx.status == WorkflowStatus.COMPLETED
        assert ctx.shared_data["g"]["successful_tasks"] == 2
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=port, socket_timeout=2).ping()  # no plain-text access
        logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
        assert "broker rediss://:***@127.0.0.1" in logs  # the URL logged with its password masked
        assert password not in logs
    finally:
        server.terminate()
        server.wait(10)
