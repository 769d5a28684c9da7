"""The original design's Data Analysis Pipeline, end to end on real workers.

Every figure is recomputed here from the records the workers handed to each other
(``csv`` and ``statistics``), so a wrong handoff or a canned number fails the test.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from datetime import date
from pathlib import Path

import pytest

from orchestration import TaskStatus, WorkflowStatus
from orchestration.client import WorkflowOrchestrator
from tests.helpers import QUICKSTART_PIPELINE

pytestmark = pytest.mark.workflow_suite

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = QUICKSTART_PIPELINE  # the README's, read from examples/quickstart.py


def quarter(day: str) -> str | None:
    try:
        d = date.fromisoformat(day)
    except (TypeError, ValueError):
        return None
    return f"{d.year}-Q{(d.month - 1) // 3 + 1}"


def test_data_analysis_pipeline_computes_its_figures_from_the_data(
    orch: WorkflowOrchestrator,
) -> None:
    wid = orch.run_workflow(PIPELINE)
    ctx = orch.wait(wid, timeout=120)

    assert ctx.status == WorkflowStatus.COMPLETED, ctx.error
    assert (ctx.current_step, ctx.total_steps) == (5, 5)
    assert [r.agent_id for r in ctx.task_results.values()] == [
        "data_processor",
        "data_processor",
        "analyzer",
        "analyzer",
        "reporter",
    ]
    assert all(r.status == TaskStatus.COMPLETED for r in ctx.task_results.values())
    data = ctx.shared_data

    # Extract: every row of the shipped CSV.
    with (ROOT / "agents/data/business_records.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert data["extracted_records"]["record_count"] == len(rows) == 1250

    # Clean: duplicates gone, no null left in the fields that matter.
    cleaned = data["cleaned_records"]
    records = cleaned["records"]
    distinct_rows = {tuple(r.values()) for r in rows}
    assert cleaned["duplicates_removed"] == len(rows) - len(distinct_rows)
    assert (
        cleaned["output_count"] == len(records) == len(distinct_rows) - cleaned["null_rows_dropped"]
    )
    assert all(r["customer_id"] and r["revenue"] is not None for r in records)
    assert len({r["order_id"] for r in records}) == len(records)

    # Statistics: recomputed from the cleaned records this step received.
    revenue = [float(r["revenue"]) for r in records]
    stats = data["analysis_results"]["fields"]["revenue"]
    assert stats["count"] == len(revenue)
    assert abs(stats["mean"] - statistics.fmean(revenue)) < 1e-2
    assert abs(stats["std"] - statistics.stdev(revenue)) < 1e-2
    mean, sd = statistics.fmean(revenue), statistics.stdev(revenue)
    outliers = sorted(r["order_id"] for r in records if abs(float(r["revenue"]) - mean) / sd > 3)
    assert sorted(data["analysis_results"]["outliers"]["ids"]) == outliers
    assert data["analysis_results"]["outliers"]["count"] == len(outliers) > 0

    # Trend: quarterly revenue and the growth from first to last quarter.
    by_quarter: dict[str, float] = defaultdict(float)
    for r in records:
        q = quarter(r["order_date"])
        if q:
            by_quarter[q] += float(r["revenue"])
    periods = {p["period"]: p["revenue"] for p in data["trend_results"]["periods"]}
    assert periods.keys() == by_quarter.keys()
    assert all(abs(periods[q] - by_quarter[q]) < 0.01 for q in by_quarter)
    first, last = by_quarter[min(by_quarter)], by_quarter[max(by_quarter)]
    assert abs(data["trend_results"]["overall_growth_pct"] - (last / first - 1) * 100) < 0.01
    assert data["trend_results"]["direction"] == "upward"

    # Report: a real file with the same figures and a real chart image.
    report = data["final_report"]
    text = Path(report["report_path"]).read_text()
    assert f"{sum(revenue):,.2f}" in text
    assert report["headline"]["outliers"] == len(outliers)
    assert report["chart_paths"]
    for chart in report["chart_paths"]:
        assert Path(chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path(chart).name in text
