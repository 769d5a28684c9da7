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
from typing import Any

import pytest
from celery import chain

from bench import report
from bench.maps import section as maps_section
from bench.scenarios import runs_of
from bench.sides import BareSide, Lost, Workdir
from orchestration.client.embedded import RedisServer

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
    "## 8. Agents that call the outside world",
    "## 9. People and time in the loop",
    "## 10. Maps over run-time lists",
    "## 11. Limits inside maps",
    "## Where a Baton step's time goes",
]
#: Section 8's parts (bench/io.py), each with a table of figures.
IO_PARTS = [
    "### 8a. I/O-bound concurrency",
    "### 8b. A global rate limit",
    "### 8c. Streamed output",
]
NUMBER = re.compile(r"-?\d[\d,]*(\.\d+)?")


def _section(text: str, title: str, level: str = "## ") -> str:
    start = text.index(title)
    nxt = text.find("\n" + level, start + len(title))
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
        timeout=240,
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
    # The I/O scenarios' targets are in the headline too: concurrency, limit, stream.
    io_targets = [r for r in headline if r[0].startswith(("I/O-bound", "Limit", "Stream"))]
    assert len(io_targets) == 7, headline
    assert all(NUMBER.search(r[1]) for r in io_targets), io_targets
    # So are the signals' and timers' (section 9).
    waits = [r for r in headline if r[0].startswith(("Signal", "500 workflows"))]
    assert len(waits) == 2 and all(NUMBER.search(r[1]) for r in waits), headline
    # And the maps' (section 10): against the two chords, messages, memory, the largest map.
    maps = [r for r in headline if r[0].startswith("Map ")]
    assert len(maps) == 5 and all(NUMBER.search(r[1]) for r in maps), headline
    assert all(NUMBER.search(r[2]) for r in maps[:2]), maps  # the chords' wall times

    section8 = _section(text, "## 8. Agents that call the outside world")
    for part in IO_PARTS:
        rows = _table_rows(_section(section8, part, "### "))
        assert rows, f"{part}: no table"
        for row in rows:
            assert any(NUMBER.search(c) for c in row[1:]), (part, row)
    calls = {r[0]: r for r in _table_rows(_section(section8, IO_PARTS[0], "### "))}
    # Every side made its calls, and the API saw them in flight at once.
    assert all(NUMBER.fullmatch(c) for c in calls["calls"][1:]), calls["calls"]
    assert NUMBER.fullmatch(calls["the API's most requests in flight at once"][1])
    # Section 11: the limits held inside maps (rate and concurrency), each judged.
    limits = _table_rows(_section(text, "## 11. Limits inside maps"))
    assert [r[-1] for r in limits if r[1] == "most running at once"] == ["yes", "yes"], limits
    assert len([r for r in limits if r[0].startswith("no limit, a map of")]) == 1, limits

    png = tmp_path / "benchmarks.png"
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_celery_chain_that_never_finishes_is_lost_and_the_bench_goes_on(
    tmp_path: Path,
) -> None:
    """A chain whose second task goes to a queue no worker consumes never finishes: the
    bench waits for it no longer than its bound per run, counts it as lost, keeps the
    other results of the run, and says so in the report."""
    server = RedisServer(tmp_path / "redis").start()
    side = BareSide(Workdir(tmp_path, server.url))
    try:
        side.start()
        noop = side._task("noop")

        def never() -> chain:
            return chain(noop.s(), noop.s().set(queue="agent.nobody"))

        done = side.submit_many(4, 2)
        assert side.wait_all(done) == 0  # (done: each is found at once from here on)
        side.bound = 0.5  # the bound of a run, in which one chain never finishes
        assert side.wait_all([done[0], never().apply_async(), *done[1:]]) == 1
        with pytest.raises(Lost):
            side._run(never())
        assert runs_of(side, lambda: side._run(never()), 2) == []
        assert side.lost == 3
    finally:
        side.stop()
        server.stop()

    res: dict[str, list[dict[str, Any]]] = {
        "baton": [{"lost": {}}],
        "celery": [{"lost": {"throughput": 1, "sequential": 2}}],
    }
    more = [{"side": "celery threads", "scenario": "8a. concurrency", "bound_s": 600.0}] * 2
    text = report.lost_runs(res, {"celery": [{"lost": 1}], "baton": [{"lost": 0}]}, 0.5, more)
    assert "## Lost runs" in text
    rows = _table_rows(text)
    assert rows == [["celery", "memory", "1", "0.5"], ["celery", "sequential", "2", "0.5"],
                    ["celery", "throughput", "1", "0.5"],
                    ["celery threads", "8a. concurrency", "2", "600"]]  # fmt: skip
    assert "None" in report.lost_runs({"baton": [{"lost": {}}]}, {}, 300)


def test_a_lost_group_chord_or_map_is_left_out_of_sections_8_and_10() -> None:
    """A repeat of section 8 whose group or chord was lost is ``None``: its figures are
    left out, and a bound judged on every repeat is not met; a section 10 run whose maps
    and chords were all lost renders with no figures and fails its targets."""
    conc = {"wall_s": 2.0, "rss_peak_mb": 100.0, "calls": 10, "per_s": 5.0, "max_in_flight": 10,
            "cpu_s": 1.0, "api_cpu_s": 0.5}  # fmt: skip
    lim = {"wall_s": 2.0, "calls": 40, "ideal_s": 2.0, "off_ideal": 0.01,
           "max_sent_per_second": 20, "max_per_second": 20, "rejected_429": 0, "accepted": 40,
           "span_s": 1.9, "close_sends": 0}  # fmt: skip
    stream = {"emitted": 20, "seen": 20, "median_ms": 1.0, "p95_ms": 2.0, "max_ms": 3.0}
    sizes = {"calls": 10, "delay": 1.0, "limit_calls": 40, "limit_workers": 3, "emits": 20,
             "poll_ms": 5.0, "aio_concurrency": 10, "threads": 10, "prefork": 2,
             "prefork_calls": 4, "warmup": 2, "limit_delay": 0.1, "limit_aio_concurrency": 5,
             "limit_threads": 5, "emit_gap_ms": 5.0}  # fmt: skip
    io = {"sizes": sizes,
          "concurrency": {"baton": [None, conc], "threads": [conc, conc],
                          "prefork": [conc, None], "floor": [conc, conc]},
          "limit": {"baton": [None], "celery": [lim]},
          "stream": {"baton": [stream, stream], "celery": [stream, stream]}}  # fmt: skip
    targets = _table_rows(report.io_targets(io))
    rss = next(r for r in targets if "peak RSS" in r[0])
    assert rss[1] == "100" and rss[-1] == "**no**", rss  # one repeat lost: not every repeat
    limit = [r for r in targets if r[0].startswith("Limit")]  # Baton's only repeat lost
    assert len(limit) == 3 and all(r[1] == "–" and r[-1] == "**no**" for r in limit), limit
    assert "8a. I/O-bound concurrency" in report.io_section(io)

    maps_sizes = {"items": 1000, "batch_size": 100, "chunk": 100, "scale": [500, 2000]}
    lost_run = {"sizes": maps_sizes, "cores": 2, "hash_compact_entries": 128,
                "baton": {"timed": None, "scale": [None, None]},
                "celery": {"chord": None, "chunked": None,
                           "messages": {"chord": None, "chunked": None}}}  # fmt: skip
    rows = _table_rows(report.maps_targets([lost_run]))
    assert len(rows) == 5 and all(r[-1] == "**no**" for r in rows), rows
    assert "## 10. Maps over run-time lists" in maps_section([lost_run])
