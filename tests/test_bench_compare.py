"""``python -m bench.compare``: its argument errors, and its table, without running a
scenario (a real comparison takes minutes; see docs/benchmarks-compare.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.compare import EARLIER, THIS, table

ROOT = Path(__file__).resolve().parents[1]


def _compare(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bench.compare", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_an_unknown_revision_is_one_plain_line_and_exit_code_2() -> None:
    res = _compare("--against", "no-such-revision-3f9c")
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        f"bench.compare: unknown revision 'no-such-revision-3f9c': no such commit in {ROOT}"
    ]


def test_an_unknown_scenario_is_refused_before_anything_runs() -> None:
    res = _compare("--against", "HEAD", "--scenarios", "io,nope")
    assert res.returncode == 2
    assert "unknown scenario(s) nope" in res.stderr
    assert "Traceback" not in res.stderr


def test_the_runner_refuses_an_unknown_scenario() -> None:
    cmd = [sys.executable, "-P", str(ROOT / "bench" / "compare_one.py"), "nope"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stdout == ""
    assert "Traceback" not in res.stderr


def test_the_table_gives_medians_spreads_and_per_repeat_ratios() -> None:
    runs = {
        THIS: [{"wall_s": 3.0, "cpu_s": 2.0}, {"wall_s": 2.0, "cpu_s": 2.0}, None],
        EARLIER: [{"wall_s": 2.0, "cpu_s": 1.0}, {"wall_s": 1.0, "cpu_s": 1.0}, None],
    }
    text = table("io", runs, {THIS: "aaaaaaa", EARLIER: "bbbbbbb"})
    assert "(runs: this 2, earlier 2)" in text
    assert "| this (aaaaaaa) | earlier (bbbbbbb) | this ÷ earlier |" in text
    # medians 2.5 and 1.5; the ratios within each repeat 1.5 and 2.0
    assert "| wall s | 2.50 (2.00–3.00) | 1.50 (1.00–2.00) | 1.67× (1.50–2.00) |" in text
    assert "| worker CPU s | 2.00 (2.00–2.00) | 1.00 (1.00–1.00) | 2.00× (2.00–2.00) |" in text
