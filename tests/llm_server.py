"""The loopback chat API (:mod:`workers.llm_loopback`) in a process of its own, for tests
and benchmarks: ``with LLMServer(keys=("sk-a",)) as llm``, then ``llm.url``, ``llm.stats()``.

The server itself, and :func:`reply_for` / :func:`tokens_of` (what it answers, so a test can
compute it), live in the product module; they are re-exported here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workers.llm_loopback import quotas_of, reply_for, tokens_of

__all__ = ["LLMServer", "reply_for", "tokens_of"]

ROOT = Path(__file__).resolve().parents[1]


class LLMServer:
    """The server in a process of its own on 127.0.0.1: ``with LLMServer(...) as llm``.

    ``keys``: the accepted API keys, each ``"KEY"`` or ``"KEY=QUOTA"``; ``delay``: seconds
    before each answer (the model's latency); ``token_delay``: seconds between streamed
    tokens.
    """

    def __init__(
        self,
        keys: Iterable[str] = ("sk-test",),
        *,
        quota_per_second: float = 20,
        delay: float = 0.0,
        token_delay: float = 0.0,
    ) -> None:
        self.quotas = quotas_of(keys, quota_per_second)
        self.args = ["--quota-per-second", str(quota_per_second), "--delay", str(delay)]
        self.args += ["--token-delay", str(token_delay)]
        self.args += [a for k, q in self.quotas.items() for a in ("--key", f"{k}={q}")]
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The API's base URL, as an OpenAI client takes it."""
        return f"{self.base}/v1"

    def start(self) -> LLMServer:
        path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        cmd = [sys.executable, "-m", "workers.llm_loopback", "--port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the port once it listens; "" if it died
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"workers.llm_loopback did not start (it printed {line!r})")
        self.port = int(line)
        self.stats()  # it answers (it printed its port once listening)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def _call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(f"{self.base}{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        """``{"keys": {key: {requests, accepted, rejected_429, bad_request, max_per_second,
        in_flight, max_in_flight, accepted_at (epoch seconds), last_request, quota}},
        "unauthorized": n}``."""
        out: dict[str, Any] = self._call("GET", "/stats")
        return out

    def reset(self) -> None:
        self._call("POST", "/reset")

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
