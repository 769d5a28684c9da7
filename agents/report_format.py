"""How a report looks: a small document model (sections of lists, tables and images),
rendered to Markdown or HTML so both formats say the same thing, and its charts."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Block = tuple[str, Any]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def rows_of(d: dict[str, Any]) -> list[list[str]]:
    return [
        [k.replace("_", " ").removesuffix(" pct"), fmt_pct(v) if k.endswith("_pct") else fmt(v)]
        for k, v in d.items()
    ]


def fmt(v: Any, digits: int | None = None) -> str:
    if isinstance(v, bool) or v is None:
        return "–" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        # Money and counts read best with cents; rates and shares need more places.
        places = digits if digits is not None else 2 if abs(v) >= 10 else 4
        return f"{v:,.{places}f}"
    return str(v)


def fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1f}%"


# --------------------------------------------------------------------------- charts


def _figure(width: float) -> tuple[Figure, Axes]:
    """A figure drawn off-screen. (matplotlib is imported here, when a report draws a
    chart: at module level it was most of the start-up time of every ``baton`` command.)"""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, 4), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _thousands() -> Any:
    from matplotlib.ticker import StrMethodFormatter

    return StrMethodFormatter("{x:,.0f}")


def period_chart(trend: dict[str, Any], path: Path) -> Path:
    labels = [pt["period"] for pt in trend["periods"]]
    values = [pt["revenue"] for pt in trend["periods"]]
    fig, ax = _figure(8)
    ax.bar(labels, values, color="#4c78a8", label="revenue")
    slope = trend.get("slope_per_period")
    if slope is not None:
        # The fitted line passes through the centroid (mean index, mean revenue).
        mid, avg = (len(values) - 1) / 2, sum(values) / len(values)
        fitted = [avg + slope * (i - mid) for i in range(len(values))]
        ax.plot(labels, fitted, color="#f58518", marker="o", label="least-squares trend")
    ax.yaxis.set_major_formatter(_thousands())
    ax.set_title(f"Revenue by period ({trend['period']}) — {trend['direction']}")
    ax.set_ylabel("Revenue")
    ax.tick_params(axis="x", labelrotation=45)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def bar_chart(data: dict[str, tuple[int, float]], title: str, path: Path) -> Path:
    fig, ax = _figure(7)
    names = list(data)[::-1]
    ax.barh(names, [data[n][1] for n in names], color="#54a24b")
    ax.set_title(title)
    ax.set_xlabel("Revenue")
    ax.xaxis.set_major_formatter(_thousands())
    fig.tight_layout()
    fig.savefig(path)
    return path


# --------------------------------------------------------------------------- rendering


def render(title: str, workflow_id: str, sections: list[Section], fmt: str) -> str:
    if fmt == "html":
        return render_html(title, workflow_id, sections)
    lines = [f"# {title}", "", f"Workflow `{workflow_id}`", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for kind, body in s.blocks:
            if kind == "ul":
                lines += [f"- {item}" for item in body]
            elif kind == "table":
                header, rows = body
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(r) + " |" for r in rows]
            elif kind == "img":
                lines.append(f"![{s.title}]({body})")
            lines.append("")
    return "\n".join(lines)


def render_html(title: str, workflow_id: str, sections: list[Section]) -> str:
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title></head><body>",
        f"<h1>{e(title)}</h1><p>Workflow <code>{e(workflow_id)}</code></p>",
    ]
    for s in sections:
        parts.append(f"<h2>{e(s.title)}</h2>")
        for kind, body in s.blocks:
            if kind == "ul":
                parts.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in body) + "</ul>")
            elif kind == "table":
                header, rows = body
                head = "".join(f"<th>{e(h)}</th>" for h in header)
                trs = "".join(
                    "<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows
                )
                parts.append(f"<table><tr>{head}</tr>{trs}</table>")
            elif kind == "img":
                parts.append(f"<img src='{e(body)}' alt='{e(s.title)}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
