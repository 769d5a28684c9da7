"""The reporter agent: turns earlier steps' outputs into a report file with charts.

What the report says is decided here; how it looks (the document model, Markdown and
HTML, the charts) is ``agents/report_format.py``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from agents.base import StepInput
from agents.records import ValidOnly, num, passing, records_from, totals_by
from agents.registry import Agent
from agents.report_format import (
    Section,
    bar_chart,
    fmt,
    fmt_pct,
    period_chart,
    render,
    rows_of,
)
from orchestration.settings import get_settings

log = logging.getLogger("baton.agents.reporter")

reporter = Agent("reporter", description="Writes a Markdown/HTML report with charts")

MAX_INLINE_CONTENT = 64 * 1024


class ReportParams(ValidOnly):
    model_config = ConfigDict(extra="forbid")

    format: Literal["executive_summary", "detailed"] = "executive_summary"
    output_format: Literal["markdown", "html"] = "markdown"
    output_dir: str | None = None  # default: BATON_REPORTS_DIR (or BATON_HOME/reports)
    analysis_key: str = "analysis_results"
    trend_key: str = "trend_results"
    records_key: str = "cleaned_records"
    extra_keys: list[str] | None = None  # default: every other summary-like shared_data value
    title: str = "Business Performance Report"


class ReportOutput(BaseModel):
    report_path: str
    chart_paths: list[str]
    headline: dict[str, Any]
    sections: list[str]
    format: str
    output_format: str
    content: str | None


@reporter.task(params=ReportParams, output=ReportOutput)
def generate_report(step: StepInput[ReportParams]) -> ReportOutput:
    """Headline figures, insights, period and region tables, charts, parallel results."""
    p = step.parameters
    shared = step.shared_data
    analysis: dict[str, Any] | None = shared.get(p.analysis_key)
    trend: dict[str, Any] | None = shared.get(p.trend_key)
    if not analysis and not trend:
        raise ValueError(
            f"nothing to report: shared_data has neither {p.analysis_key!r} nor {p.trend_key!r}"
        )
    records, left_out = _optional_records(shared, p)
    detailed = p.format == "detailed"
    out_dir = Path(p.output_dir) if p.output_dir else get_settings().reports_path
    out_dir = out_dir / re.sub(r"[^A-Za-z0-9_.-]", "_", step.workflow_id)
    out_dir.mkdir(parents=True, exist_ok=True)

    headline = _headline(analysis, trend, records)
    if p.validation_key is not None:
        headline["records_failing_validation"] = left_out
    sections = [Section("Headline figures", [("table", (["Figure", "Value"], rows_of(headline)))])]
    if p.validation_key is not None:
        notes = _left_out_notes(p.validation_key, left_out, analysis, trend)
        sections[0].blocks.append(("ul", notes))
    insights = list((analysis or {}).get("insights", []))
    if trend:
        insights.append(
            f"Revenue trend is {trend['direction']}: {fmt_pct(trend['overall_growth_pct'])} from "
            f"{trend['periods'][0]['period']} to {trend['periods'][-1]['period']}, "
            f"best period {trend['best_period']['period']}, worst {trend['worst_period']['period']}"
        )
    if insights:
        sections.append(Section("Key insights", [("ul", insights)]))

    charts: list[Path] = []
    if trend:
        chart = period_chart(trend, out_dir / "revenue_by_period.png")
        charts.append(chart)
        rows = [
            [pt["period"], fmt(pt["revenue"]), str(pt["orders"]), fmt_pct(pt["growth_pct"])]
            for pt in trend["periods"]
        ]
        sections.append(
            Section(
                f"Revenue by period ({trend['period']})",
                [("table", (["Period", "Revenue", "Orders", "Growth"], rows)), ("img", chart.name)],
            )
        )
        if trend.get("skipped_records"):
            sections[-1].blocks.append(
                ("ul", [f"{trend['skipped_records']} records without a usable date are not in "
                        f"this table: it adds up to {fmt(trend['total_revenue'])}, not the "
                        "total revenue of every record"])
            )  # fmt: skip
    regions = _region_totals(analysis, records)
    if regions:
        chart = bar_chart(regions, "Revenue by region", out_dir / "revenue_by_region.png")
        charts.append(chart)
        rows = [[k, str(n), fmt(t)] for k, (n, t) in regions.items()]
        sections.append(
            Section(
                "Revenue by region",
                [("table", (["Region", "Orders", "Revenue"], rows)), ("img", chart.name)],
            )
        )
    if detailed and analysis:
        sections.extend(_detail_sections(analysis))
    for key in _extra_keys(p, shared):
        sections.extend(_extra_sections(key, shared[key], limit=40 if detailed else 10))

    text = render(p.title, step.workflow_id, sections, p.output_format)
    report = out_dir / ("report.md" if p.output_format == "markdown" else "report.html")
    report.write_text(text, encoding="utf-8")
    log.info("wrote %s with %d charts", report, len(charts))
    return ReportOutput(
        report_path=str(report.resolve()),  # absolute: the worker's cwd is not the reader's
        chart_paths=[str(c.resolve()) for c in charts],
        headline=headline,
        sections=[s.title for s in sections],
        format=p.format,
        output_format=p.output_format,
        content=text if len(text.encode()) <= MAX_INLINE_CONTENT else None,
    )


# --------------------------------------------------------------------------- figures


def _optional_records(shared: dict[str, Any], p: ReportParams) -> tuple[list[Any] | None, int]:
    """The records that passed validation, if present: they only add sections, so their
    absence is no error (a validation_key that names no validation is)."""
    if p.records_key not in shared:
        return None, 0
    try:
        records = records_from(shared[p.records_key], p.records_key)
    except ValueError:
        return None, 0
    return passing(records, shared, p)


def _left_out_notes(
    key: str, left_out: int, analysis: dict[str, Any] | None, trend: dict[str, Any] | None
) -> list[str]:
    """What the report leaves out, and which of its inputs did not (so no total surprises)."""
    notes = [
        f"{left_out} records failed validation ({key}) and are left out of every figure, "
        "table and chart"
    ]
    for name, value in (("statistics", analysis), ("trend", trend)):
        if value and value.get("failed_validation_left_out", 0) != left_out:
            notes.append(
                f"the {name} step did not leave them out (give it validation_key: {key}): "
                "its figures include them"
            )
    return notes


def _headline(
    analysis: dict[str, Any] | None, trend: dict[str, Any] | None, records: list[Any] | None
) -> dict[str, Any]:
    """Headline figures, each from the most complete source that has it."""
    h: dict[str, Any] = {}
    revenue = (analysis or {}).get("fields", {}).get("revenue")
    if analysis:
        h["records_analysed"] = analysis["record_count"]
    elif records is not None:
        h["records_analysed"] = len(records)
    # One definition of revenue in every report: the sum over all analysed records.
    amounts = [v for r in records or [] if (v := num(r, "revenue")) is not None]
    if revenue:
        h["total_revenue"] = revenue["sum"]
        h["average_order_value"] = round(revenue["mean"], 2)  # money: to the cent, as below
    elif amounts:
        h["total_revenue"] = round(sum(amounts), 2)
        h["average_order_value"] = round(sum(amounts) / len(amounts), 2)
    elif trend:
        h["total_revenue"] = trend["total_revenue"]
    if trend and trend.get("skipped_records"):
        # The period table leaves out records without a usable date: say so, and how much.
        h["revenue_in_periods"] = trend["total_revenue"]
        h["records_without_a_date"] = trend["skipped_records"]
    if trend:
        h["period_range"] = f"{trend['periods'][0]['period']} to {trend['periods'][-1]['period']}"
        h["growth_rate_pct"] = trend["overall_growth_pct"]
        h["cagr_pct"] = trend["cagr_pct"]
        h["trend_direction"] = trend["direction"]
        h["best_period"] = trend["best_period"]["period"]
        h["worst_period"] = trend["worst_period"]["period"]
    if analysis and analysis.get("outliers"):
        h["outliers"] = analysis["outliers"]["count"]
    return h


def _region_totals(
    analysis: dict[str, Any] | None, records: list[Any] | None
) -> dict[str, tuple[int, float]]:
    region = (analysis or {}).get("breakdowns", {}).get("region")
    if region:
        return {k: (s["count"], s["total"]) for k, s in region.items()}
    if records and any("region" in r for r in records):
        return totals_by(records, "region", "revenue")
    return {}


def _detail_sections(analysis: dict[str, Any]) -> list[Section]:
    header = ["Field", "Count", "Mean", "Std", "Min", "Median", "Max"]
    rows = [
        [name, str(s["count"]), *(fmt(s[k]) for k in ("mean", "std", "min", "median", "max"))]
        for name, s in analysis["fields"].items()
    ]
    out = [Section("Field statistics", [("table", (header, rows))])]
    corr = analysis.get("correlations", {}).get("revenue")
    if corr:
        rows = [[b, fmt(r, 3)] for b, r in corr.items()]
        out.append(
            Section("Correlation with revenue (Pearson r)", [("table", (["Field", "r"], rows))])
        )
    for name, slices in analysis.get("breakdowns", {}).items():
        if name != "region":
            rows = [
                [k, str(s["count"]), fmt(s["total"]), f"{s['share']:.1%}"]
                for k, s in slices.items()
            ]
            out.append(
                Section(
                    f"Revenue by {name}", [("table", ([name, "Records", "Revenue", "Share"], rows))]
                )
            )
    return out


def _extra_keys(p: ReportParams, shared: dict[str, Any]) -> list[str]:
    if p.extra_keys is not None:
        return [k for k in p.extra_keys if k in shared]
    taken = {p.analysis_key, p.trend_key, p.records_key}
    return [
        k
        for k, v in shared.items()
        if k not in taken and isinstance(v, dict) and not isinstance(v.get("records"), list)
    ]


def _is_rows(value: Any) -> bool:
    """A non-empty list of objects with the same keys (a failed map item's null left out)."""
    return (
        isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)
        and len({tuple(r) for r in value}) == 1
    )  # fmt: skip


def _extra_sections(key: str, value: Any, limit: int) -> list[Section]:
    """A parallel group's summary as one section per agent, anything else as figures."""
    perf = value.get("agent_performance") if isinstance(value, dict) else None
    if _is_rows(value):  # a map's collected outputs: a row each, their plain fields
        cols = [k for k, v in value[0].items() if not isinstance(v, dict | list)]
        rows = [[fmt(r.get(c)) for c in cols] for r in value[:limit]]
        more = [("ul", [f"{len(value) - limit} more not shown"])] if len(value) > limit else []
        return [Section(f"Results: {key}", [("table", (cols, rows)), *more])]
    if not isinstance(perf, dict):
        return [Section(f"Results: {key}", [("table", (["Figure", "Value"], _flat(value, limit)))])]
    rows = [
        [
            agent,
            str(a.get("tasks_completed")),
            str(a.get("tasks_failed")),
            fmt(a.get("average_time"), 3),
        ]
        for agent, a in perf.items()
    ]
    out = [
        Section(
            f"Parallel analysis: {key}",
            [("table", (["Agent", "Completed", "Failed", "Avg s"], rows))],
        )
    ]
    failures = value.get("failures") or {}
    if failures:
        out[0].blocks.append(("ul", [f"{k}: {v}" for k, v in failures.items()]))
    for agent, a in perf.items():
        for result in a.get("results") or []:
            out.append(
                Section(
                    f"Results: {agent}", [("table", (["Figure", "Value"], _flat(result, limit)))]
                )
            )
    return out


def _flat(value: Any, limit: int) -> list[list[str]]:
    """Scalar leaves of a nested value as (path, value) rows, at most ``limit`` of them; a
    table that is cut says how many rows it leaves out."""
    rows = _leaves(value)
    if len(rows) > limit:
        rows = [*rows[:limit], [f"... {len(rows) - limit} more not shown", ""]]
    return rows


def _leaves(value: Any, prefix: str = "", depth: int = 0) -> list[list[str]]:
    rows: list[list[str]] = []
    if isinstance(value, dict) and depth < 3:
        for k, v in value.items():
            rows.extend(_leaves(v, f"{prefix}.{k}" if prefix else str(k), depth + 1))
    elif isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            shown = ", ".join(fmt(v) for v in value[:10])
            more = f" ... ({len(value) - 10} more)" if len(value) > 10 else ""
            rows.append([prefix, shown + more])
        else:
            rows.append([prefix, f"a list of {len(value)}"])
    elif isinstance(value, dict):
        rows.append([prefix, f"{len(value)} fields, not shown"])
    else:
        rows.append([prefix or "value", fmt(value)])
    return rows
