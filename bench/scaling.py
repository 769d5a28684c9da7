"""Horizontal scaling, measured: N slow remote calls in one group on 1, 2, 3 processes.

``python -m bench.scaling [--calls 60] [--ms 100] [--out docs/scaling.md]`` starts its own
redis-server and a local HTTP service that answers after ``--ms`` (standing in for an LLM
or API call), then runs the same parallel group with 1, 2 and 3 worker processes on the
agent's queue, and writes the group's wall time and each process's share.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from orchestration.client import WorkflowOrchestrator
from orchestration.client.embedded import LocalWorkers, RedisServer
from orchestration.settings import BatonSettings

ROOT = Path(__file__).resolve().parents[1]


class SlowAPI(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        ms = int(parse_qs(urlsplit(self.path).query)["ms"][0])
        time.sleep(ms / 1000)  # the remote service's latency
        body = json.dumps({"waited_ms": ms}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


#: Where the part of docs/scaling.md this script does not write begins.
KEEP_FROM = "<!-- capacity:start -->"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=60)
    ap.add_argument("--ms", type=int, default=100)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "scaling.md")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="baton-scaling-"))
    server = RedisServer(home / "redis").start()
    api = ThreadingHTTPServer(("127.0.0.1", 0), SlowAPI)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{api.server_address[1]}/answer"
    env = {"BATON_AGENT_MODULES": "bench.agents", "PYTHONPATH": str(ROOT), "BATON_HOME": str(home)}
    settings = BatonSettings(redis_url=server.url, home=home, agent_modules=["bench.agents"])
    orch = WorkflowOrchestrator(server.url, settings=settings, local_workers=False)
    member = {
        "agent_id": "bench_remote",
        "task_type": "remote_call",
        "parameters": {"url": url, "ms": args.ms},
    }
    rows = []
    try:
        for processes in (1, 2, 3):
            pool = LocalWorkers(
                server.url,
                [["bench_remote"]] * processes,
                concurrency=1,
                env=env,
                log_dir=home / "logs",
            )
            pool.start(orch.app)
            try:
                t0 = time.monotonic()
                wid = orch.run_workflow(
                    {"steps": [{"parallel": [member] * args.calls, "output_key": "g"}]}
                )
                ctx = orch.wait(wid, timeout=600)
                wall = time.monotonic() - t0
            finally:
                pool.stop()
            shares = Counter(
                r.worker for r in ctx.task_results.values() if r.agent_id == "bench_remote"
            )
            rows.append(
                (
                    processes,
                    wall,
                    ctx.shared_data["g"]["total_execution_time"],
                    sorted(shares.values()),
                )
            )
            print(
                f"{processes} process(es): {wall:.2f}s, shares {sorted(shares.values())}",
                file=sys.stderr,
            )
    finally:
        orch.close()
        server.stop()
        api.shutdown()
    base = rows[0][1]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Scaling an agent horizontally",
        "",
        f"Written by `python -m bench.scaling` on {when},"
        f" {os.cpu_count()} cores: one parallel group of {args.calls} calls to a local service that"
        f" answers after {args.ms} ms (an LLM or API call's stand-in), on 1, 2 and 3 worker"
        " processes of the agent's queue (`baton worker --agents bench_remote -c 1` each).",
        "",
        "| processes | run_workflow to wait (s) | group wall time (s) | speed-up"
        " | calls per process |",
        "|---|---|---|---|---|",
        *[
            f"| {p} | {w:.2f} | {g:.2f} | {base / w:.2f}× | {', '.join(map(str, s))} |"
            for p, w, g, s in rows
        ],
        "",
    ]
    # Only its own part: what follows its table (the capacity figures of bench/capacity.py
    # from its first marker on, and the hand-written design) is kept as it is.
    old = args.out.read_text() if args.out.exists() else ""
    rest = old[old.index(KEEP_FROM) :] if KEEP_FROM in old else ""
    args.out.write_text("\n".join(lines) + ("\n" + rest if rest else ""))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
