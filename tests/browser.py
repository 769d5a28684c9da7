"""Headless Chromium for the tests: a DevTools-protocol client and a browser fixture.

Debian's ``chromium`` package (installed by ``.ci/run``), driven over its DevTools
websocket with Tornado's client: no browser download, no extra package.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tests.helpers import eventually

CHROMIUM = Path("/usr/bin/chromium")


def http(url: str, timeout: float = 10.0) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


class DevTools:
    """A minimal Chrome DevTools protocol client over Tornado's websocket client."""

    def __init__(self, ws: WebSocketClientConnection) -> None:
        self.ws = ws
        self.next_id = 0

    @classmethod
    async def connect(cls, url: str) -> DevTools:
        return cls(await websocket_connect(url, max_message_size=64 * 1024 * 1024))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        me = self.next_id
        await self.ws.write_message(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            raw = await asyncio.wait_for(self.ws.read_message(), timeout=30)
            assert raw is not None, "DevTools connection closed"
            msg = json.loads(raw)
            if msg.get("id") == me:
                assert "error" not in msg, msg["error"]
                return dict(msg.get("result", {}))

    async def js(self, expression: str) -> Any:
        reply = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    async def until(self, expression: str, timeout: float, what: str) -> Any:
        """Re-evaluate ``expression`` in the page until it is truthy (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.1)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[str]:
    """Headless Chromium with a DevTools port; yields the page target's websocket URL."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium)")
    profile = tmp_path / "profile"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", "--window-size=1200,800", "--remote-debugging-port=0",
        "--remote-allow-origins=*", f"--user-data-dir={profile}",
    ]  # fmt: skip
    log = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [str(CHROMIUM), *flags, "about:blank"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"

        def port() -> str:
            if proc.poll() is not None:
                raise AssertionError(f"chromium exited: {(tmp_path / 'chromium.log').read_text()}")
            lines = port_file.read_text().split() if port_file.exists() else []
            return lines[0] if lines else ""

        devtools = f"http://127.0.0.1:{eventually(port, 30, 'the DevTools port')}"

        def page() -> str:
            targets = json.loads(http(f"{devtools}/json/list")[2])
            return next((t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"), "")

        yield eventually(page, 30, "a page target")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the wrapper script's group: this browser only
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def docs_shot(name: str, tmp: Path) -> Path:
    """Where a screenshot shown in docs/ goes: docs/ itself only when asked for on purpose
    (``./dev screenshots`` sets BATON_SCREENSHOTS=1); else the test's own directory, so
    the suite never rewrites a tracked file."""
    if os.environ.get("BATON_SCREENSHOTS") == "1":
        return Path(__file__).resolve().parents[1] / "docs" / name
    return tmp / name


async def shoot(page: DevTools, path: Path) -> None:
    shot = await page.send("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))
