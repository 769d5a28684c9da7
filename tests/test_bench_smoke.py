"""``python -m bench --quick`` runs end to end and writes a report with every section.

Runs the real benchmark (its own redis-server and worker processes) at tiny sizes, in a
subprocess with a clean environment so no test-session ``BATON_*`` variable leaks in.
Only the report's shape and that it holds numbers are checked: timings vary by machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SECTIONS = [
    "## Headline: targets",
    "## Machine",
    "## How to run",
    "## 1. Sequential latency",
    "## 2. Fan-out",
    "## 2b. Payload",
    "## 3. Throughput",
    "## 4. Cost per step",
    "## 5. Handoff scaling",
    "## 6. Redis memory",
    "## 7. Client wait",
    "## Where a Baton step's time goes",
]
NUMBER = re.compile(r"-?\d[\d,]*(\.\d+)?")


def _section(text: str, title: str) -> str:
    start = text.index(title)
    nxt = text.find("\n## ", start + len(title))
    return text[start : nxt if nxt != -1 else len(text)]


def _table_rows(section: str) -> list[list[str]]:
    """Body rows of every table in the section (header rows, above ``|---``, left out)."""
    lines = section.splitlines()
    rows = []
    for i, line in enumerate(lines):
        header = i + 1 < len(lines) and lines[i + 1].startswith("|---")
        if line.startswith("|") and not line.startswith("|---") and not header:
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_quick_benchmark_writes_a_complete_report(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATON_", "BENCH_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    text = (tmp_path / "benchmarks.md").read_text()
    for title in SECTIONS:
        assert title in text, title
        if title == "## How to run":
            continue  # prose and a code block
        rows = _table_rows(_section(text, title))
        assert rows, f"{title}: no table"
        if title == "## Machine":
            continue  # versions, not measurements
        for row in rows:
            # Every row holds figures (Baton's and Celery's, or the profile's ms).
            assert any(NUMBER.search(c) for c in row[1:]), (title, row)
    headline = _table_rows(_section(text, "## Headline: targets"))
    assert all(r[-1] in ("yes", "**no**") for r in headline), headline

    png = tmp_path / "benchmarks.png"
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
