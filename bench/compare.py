"""``python -m bench.compare --against REV``: this tree against an earlier commit, A/B,
interleaved, with the spread.

Why: on a shared 2-core machine the full benchmark (``python -m bench``, ~15 min) moves
by ±30% from one hour to the next, so two runs made at different times cannot tell a
regression from the machine's mood. This measures both codes in the same minutes,
alternately: the earlier commit is checked out with ``git worktree add --detach`` in a
temporary directory (removed at the end, on failure and on Ctrl-C too); then, for each
repeat and each scenario, ONE subprocess per tree runs the scenario once
(``bench/compare_one.py``, passed by path, with ``PYTHONPATH`` and the working directory
that tree's root), the tree that goes first alternating from one repeat to the next. Each
subprocess owns a private redis-server and its workers and stops them; it reports where
``orchestration``, ``bench`` and ``tests`` were imported from, and both it and this
process check that every one is under the tree it measures. A process of a run still
alive once the run has ended (found by a token in its environment) is killed by its pid
and named on stderr.

Scenarios (each one timed run after its warm-up):

- ``io``: 1,000 chat calls of 1 s each to the loopback API as one parallel group, on ONE
  asyncio worker (``bench.io``, section 8's concurrency, Baton's side): wall seconds and
  the worker's CPU seconds.
- ``map100k``, ``map10k``: a map of 100,000 or 10,000 no-op items (``bench.maps``,
  ``batch_size`` 100, one worker process of concurrency 2): wall seconds, the map step's
  own seconds, and the worker's CPU seconds.

The report, on stdout and in ``--out`` if given, is a markdown table per scenario: for
each tree the median (min–max) over repeats, and the ratio this ÷ earlier of the medians
with the min–max of the per-repeat ratios (each repeat's two runs were made minutes
apart). Figures only: nothing here asserts a time.

    python -m bench.compare --against 09fb357 --repeats 3 --scenarios io,map100k \
        --out /tmp/compare.md

A run that fails is left out of its scenario's figures (its stderr's end is shown) and the
comparison goes on; the exit code is then 1. An unknown revision, or one without
``bench/io.py`` and ``bench/maps.py``, is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.compare_one import SCENARIOS, TOKEN_VAR, strays

ROOT = Path(__file__).resolve().parents[1]
ONE = Path(__file__).resolve().with_name("compare_one.py")
RUN_SECONDS = 900.0  # the most one run (one scenario, one tree) is given
STOP_SECONDS = 60.0  # a run told to stop (SIGTERM) has this long to stop its workers
TITLES = {
    "io": "1,000 one-second chat calls, one group, ONE asyncio worker",
    "map100k": "a map of 100,000 no-op items (batch_size 100, one worker of concurrency 2)",
    "map10k": "a map of 10,000 no-op items (batch_size 100, one worker of concurrency 2)",
}
FIELDS: dict[str, list[tuple[str, str]]] = {
    "io": [("wall_s", "wall s"), ("cpu_s", "worker CPU s")],
    "map": [("wall_s", "wall s"), ("map_s", "map step s"), ("cpu_s", "worker CPU s")],
}
THIS, EARLIER = "this", "earlier"
Figures = dict[str, Any]


class CompareError(Exception):
    """A reason to stop, said in one line (exit code 2)."""


def log(msg: str) -> None:
    print(f"[bench.compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def git(*args: str) -> str:
    res = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if res.returncode:
        first = (res.stderr.strip().splitlines() or ["(no message)"])[0]
        raise CompareError(f"git {' '.join(args)}: {first}")
    return res.stdout.strip()


def resolve(rev: str) -> str:
    """The commit ``rev`` names, checked to hold the scenarios' modules."""
    res = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if res.returncode or not res.stdout.strip():
        raise CompareError(f"unknown revision {rev!r}: no such commit in {ROOT}")
    sha = res.stdout.strip()
    for path in ("bench/io.py", "bench/maps.py", "tests/llm_server.py"):
        found = subprocess.run(["git", "cat-file", "-e", f"{sha}:{path}"], cwd=ROOT)
        if found.returncode:
            raise CompareError(f"{rev} has no {path}: it cannot run these scenarios")
    return sha


@contextmanager
def worktree(sha: str) -> Iterator[Path]:
    """``sha`` checked out, detached, in a temporary directory; removed on the way out."""
    tmp = Path(tempfile.mkdtemp(prefix="baton-compare-tree-"))
    path = tmp / "tree"
    try:
        git("worktree", "add", "--detach", "--quiet", str(path), sha)
        yield path
    finally:
        removed = subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True
        )
        if removed.returncode:  # (add failed, or the directory is half there)
            shutil.rmtree(path, ignore_errors=True)
            subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Tree:
    label: str  # THIS or EARLIER
    path: Path
    rev: str  # as the report names it


@dataclass
class Results:
    """Figures per scenario, per tree, per repeat (``None``: that run failed)."""

    runs: dict[str, dict[str, list[Figures | None]]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # which tree went first, per repeat
    failed: int = 0
    interrupted: bool = False


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM to a run (it stops its workers and redis-server), SIGKILL if it has not
    ended within ``STOP_SECONDS``; what it printed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def _figures_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith('{"scenario"'):
            out: dict[str, Any] = json.loads(line)
            return out
    return None


def _check_tree(tree: Tree, line: dict[str, Any]) -> None:
    """The run imported its modules from the tree it was meant to measure."""
    root = tree.path.resolve()
    for name, file in line["modules"].items():
        if not Path(file).resolve().is_relative_to(root):
            raise CompareError(f"the {tree.label} tree's run imported {name} from {file}")


def run_one(tree: Tree, scenario: str, timeout: float = RUN_SECONDS) -> Figures | None:
    """One subprocess: ``scenario`` once in ``tree``; its figures, or ``None`` if it failed."""
    token = os.urandom(8).hex()
    env = {**os.environ, "PYTHONPATH": str(tree.path), TOKEN_VAR: token}
    cmd = [sys.executable, "-P", str(ONE), scenario]
    proc = subprocess.Popen(
        cmd, cwd=tree.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    why = ""
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out, err = _stop(proc)
            why = f"no result within {timeout:.0f} s"
        except BaseException:  # Ctrl-C: the run stops its workers before this process ends
            _stop(proc)
            raise
    finally:
        left = strays(token)
        if left:
            log(f"{scenario} ({tree.label}): killed {len(left)} stray process(es): {left}")
    if proc.returncode == 128 + signal.SIGINT:  # Ctrl-C reached the run first
        raise KeyboardInterrupt
    line = _figures_line(out)
    if line is not None:
        _check_tree(tree, line)
        if line["strays"]:
            log(f"{scenario} ({tree.label}): the run killed strays: {line['strays']}")
    if line is None or proc.returncode:
        why = why or f"exit code {proc.returncode}"
        tail = "\n".join(err.strip().splitlines()[-15:])
        kept = [str(d) for d in Path(tempfile.gettempdir()).glob(f"baton-compare-*-{token}-*")]
        where = f" (its logs: {', '.join(kept)})" if kept else ""
        log(f"{scenario} ({tree.label} tree) failed: {why}{where}; its stderr ends:\n{tail}")
        return None
    figures: Figures = line["figures"]
    return figures


def run_all(trees: Sequence[Tree], scenarios: Sequence[str], repeats: int) -> Results:
    """``repeats`` rounds; in each, each scenario once per tree, the first tree alternating.
    Ctrl-C ends it early with what has been measured (``interrupted``)."""
    res = Results({s: {t.label: [] for t in trees} for s in scenarios})
    try:
        for rep in range(repeats):
            order = list(trees) if rep % 2 == 0 else list(trees)[::-1]
            res.order.append(" then ".join(t.label for t in order))
            for scenario in scenarios:
                for tree in order:
                    t0 = time.perf_counter()
                    figures = run_one(tree, scenario)
                    res.runs[scenario][tree.label].append(figures)
                    res.failed += figures is None
                    took = time.perf_counter() - t0
                    wall = "failed" if figures is None else f"wall {figures['wall_s']:.2f} s"
                    log(
                        f"repeat {rep + 1}/{repeats} {scenario} {tree.label}: {wall} ({took:.0f} s)"
                    )
    except KeyboardInterrupt:
        res.interrupted = True
    return res


def _span(xs: Sequence[float]) -> str:
    if not xs:
        return "–"
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"


def _values(runs: list[Figures | None], key: str) -> list[float]:
    return [float(f[key]) for f in runs if f is not None and f.get(key) is not None]


def _ratio(this: list[Figures | None], earlier: list[Figures | None], key: str) -> str:
    """this ÷ earlier of the medians, (min–max of the ratios within each repeat)."""
    a, b = _values(this, key), _values(earlier, key)
    if not a or not b:
        return "–"
    pairs = [
        float(x[key]) / float(y[key])
        for x, y in zip(this, earlier, strict=False)
        if x is not None and y is not None and float(y[key]) > 0
    ]
    med = statistics.median(a) / statistics.median(b)
    return f"{med:.2f}× ({min(pairs):.2f}–{max(pairs):.2f})" if pairs else f"{med:.2f}×"


def table(scenario: str, runs: dict[str, list[Figures | None]], revs: dict[str, str]) -> str:
    """One scenario's markdown table: median (min–max) per tree, and the ratio."""
    this, earlier = runs[THIS], runs[EARLIER]
    done = f"runs: this {len(_values(this, 'wall_s'))}, earlier {len(_values(earlier, 'wall_s'))}"
    lines = [
        f"### {scenario}: {TITLES[scenario]} ({done})",
        "",
        f"| | this ({revs[THIS]}) | earlier ({revs[EARLIER]}) | this ÷ earlier |",
        "|---|---|---|---|",
    ]
    for key, name in FIELDS["io" if scenario == "io" else "map"]:
        row = [name, _span(_values(this, key)), _span(_values(earlier, key))]
        lines.append("| " + " | ".join([*row, _ratio(this, earlier, key)]) + " |")
    return "\n".join(lines)


def report(res: Results, revs: dict[str, str], started: datetime, repeats: int) -> str:
    ended = datetime.now(UTC)
    done = (
        f"{len(res.order)} of {repeats} repeats begun" if res.interrupted else f"{repeats} repeats"
    )
    head = [
        f"## bench.compare: this tree ({revs[THIS]}) against {revs[EARLIER]}",
        "",
        f"{started:%Y-%m-%d %H:%M}–{ended:%H:%M} UTC, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {done}, each running "
        "every scenario once per tree, one subprocess per run, in the order "
        f"{'; '.join(res.order) or '–'}. Median (min–max) over repeats; this ÷ earlier is "
        "the ratio of the medians (min–max of the ratios within each repeat); below 1 is "
        "faster.",
    ]
    if res.failed:
        head.append(f"\n{res.failed} run(s) failed and are left out.")
    if res.interrupted:
        head.append("\nInterrupted: the figures are those measured before Ctrl-C.")
    tables = [table(s, runs, revs) for s, runs in res.runs.items()]
    return "\n\n".join(["\n".join(head), *tables]) + "\n"


def _scenarios(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SCENARIOS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(bad) or '(none)'}; choose from {','.join(SCENARIOS)}"
        )
    return list(dict.fromkeys(names))


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description="This tree against an earlier commit: both measured in the same "
        "minutes, alternately, once per repeat each.",
    )
    parser.add_argument("--against", required=True, metavar="REV", help="the earlier commit")
    parser.add_argument("--repeats", type=_positive, default=3, metavar="N")
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=list(SCENARIOS),
        metavar="LIST",
        help=f"comma-separated, of {','.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--out", type=Path, help="also write the report here (markdown)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    try:
        sha = resolve(args.against)
        revs = {
            THIS: git("describe", "--always", "--dirty", "--abbrev=7"),
            EARLIER: git("rev-parse", "--short=7", sha),
        }
        log(f"this tree {ROOT} ({revs[THIS]}) against {revs[EARLIER]}")
        with worktree(sha) as path:
            trees = [Tree(THIS, ROOT, revs[THIS]), Tree(EARLIER, path, revs[EARLIER])]
            res = run_all(trees, args.scenarios, args.repeats)
    except CompareError as exc:
        print(f"bench.compare: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.compare: interrupted", file=sys.stderr)
        return 130
    text = report(res, revs, started, args.repeats)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 130 if res.interrupted else 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
