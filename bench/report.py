"""Turn the raw results into docs/benchmarks.md and docs/benchmarks.png.

Every figure is the median over repeats with the min-max range; every ratio is computed
per repeat (Baton / Celery from the same repeat) and then summarised the same way.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Getter = Callable[[dict[str, Any]], float]
KB, MB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Summary:
    median: float
    lo: float
    hi: float

    def fmt(self, digits: int = 1, unit: str = "") -> str:
        def f(x: float) -> str:
            return f"{x:,.{digits}f}"

        if len({round(self.lo, digits), round(self.hi, digits)}) == 1:
            return f"{f(self.median)}{unit}"
        return f"{f(self.median)}{unit} ({f(self.lo)}–{f(self.hi)})"


def summarise(values: list[float]) -> Summary:
    return Summary(statistics.median(values), min(values), max(values))


def human_size(n: int) -> str:
    if n >= MB:
        return f"{n // MB} MB"
    if n >= KB:
        return f"{n // KB} KB"
    return f"{n} B"


@dataclass
class Row:
    """One comparison: both sides' figure and the per-repeat ratio against a target."""

    label: str
    baton: Summary
    celery: Summary
    ratio: Summary
    target: str = ""
    met: bool | None = None
    digits: int = 1
    unit: str = ""

    def cells(self) -> list[str]:
        met = "" if self.met is None else ("yes" if self.met else "**no**")
        return [
            self.label,
            self.baton.fmt(self.digits, self.unit),
            self.celery.fmt(self.digits, self.unit),
            self.ratio.fmt(2, "×"),
            self.target or "–",
            met or "–",
        ]


def compare(
    results: dict[str, list[dict[str, Any]]],
    label: str,
    get: Getter,
    *,
    target: tuple[str, float] | None = None,
    digits: int = 1,
    unit: str = "",
    diff: bool = False,
) -> Row:
    """A row from per-repeat results; ``diff`` compares Baton - Celery instead of a ratio."""
    b = [get(x) for x in results["baton"]]
    c = [get(x) for x in results["celery"]]
    rel = [(x - y) if diff else (x / y if y else float("nan")) for x, y in zip(b, c, strict=True)]
    row = Row(label, summarise(b), summarise(c), summarise(rel), digits=digits, unit=unit)
    if diff:
        row.ratio = summarise([x / y if y else float("nan") for x, y in zip(b, c, strict=True)])
    if target:
        op, bound = target
        value = statistics.median(rel)
        row.target = f"{'+' if diff else ''}{op} {bound:g}{'' if diff else '×'}"
        row.met = value <= bound if op == "≤" else value >= bound
    return row


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


HEAD = ["", "Baton", "Celery", "ratio (B/C)", "target", "met?"]


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Step latency and message size by shared-data size; fan-out wall time by size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {"baton": "tab:blue", "celery": "tab:orange"}
    sizes = sorted(int(s) for s in results["baton"][0]["handoff"])
    fans = sorted(int(s) for s in results["baton"][0]["fanout"])
    for side in ("baton", "celery"):
        runs = results[side]
        lat = [summarise([r["handoff"][str(s)]["step_ms"] for r in runs]) for s in sizes]
        msg = [
            summarise([r["handoff"][str(s)]["max_message_bytes"] / KB for r in runs])
            for s in sizes
        ]
        fan = [summarise([r["fanout"][str(n)] for r in runs]) for n in fans]
        for ax, xs, ys in ((axes[0], sizes, lat), (axes[1], sizes, msg), (axes[2], fans, fan)):
            med = [y.median for y in ys]
            err = [[y.median - y.lo for y in ys], [y.hi - y.median for y in ys]]
            ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=side, color=colors[side])
    titles = (
        ("Step latency vs shared data", "shared data (bytes)", "ms per step"),
        ("Largest task message vs shared data", "shared data (bytes)", "KB"),
        ("Fan-out wall time", "group / chord members", "seconds"),
    )
    for ax, (title, xl, yl) in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
