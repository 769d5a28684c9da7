"""The built-in agents called as plain functions (no Redis, no workers): reporter.

Expected values are computed here, independently, from the shipped CSV, never copied from
the agents' own output (``tests/builtin/conftest.py``)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.builtin.common import col, iso, run


def test_report_writes_markdown_and_charts(
    shared: dict[str, Any], truth: dict[str, Any], tmp_path: Path
) -> None:
    sd = dict(shared)
    sd["validation_results"] = run("validator", "validate_records", {}, shared)
    out = run("reporter", "generate_report", {"output_dir": str(tmp_path)}, sd)
    report = Path(out["report_path"])
    assert report == tmp_path / "wf-test" / "report.md" and report.is_file()
    assert out["chart_paths"]
    for chart in out["chart_paths"]:
        assert Path(chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path(chart).name in out["content"]
    total = sum(col(truth["clean"], "revenue"))
    h = out["headline"]
    assert h["total_revenue"] == pytest.approx(total, abs=0.01)
    assert h["records_analysed"] == len(truth["clean"])
    assert h["trend_direction"] == "upward" and h["outliers"] == 6
    assert h["growth_rate_pct"] == shared["trend_results"]["overall_growth_pct"]
    assert f"{total:,.2f}" in out["content"]
    assert out["content"] == report.read_text(encoding="utf-8")
    assert "Results: validation_results" in out["sections"]


def test_report_html_detailed_in_default_dir(
    shared: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestration.settings import get_settings

    monkeypatch.setenv("BATON_REPORTS_DIR", str(tmp_path / "reports"))
    get_settings.cache_clear()
    try:
        out = run(
            "reporter",
            "generate_report",
            {"format": "detailed", "output_format": "html"},
            shared,
        )
    finally:
        get_settings.cache_clear()
    assert out["report_path"] == str(tmp_path / "reports" / "wf-test" / "report.html")
    assert out["content"].startswith("<!doctype html>")
    assert "Field statistics" in out["sections"]


def test_report_needs_analysis_or_trend(shared: dict[str, Any], tmp_path: Path) -> None:
    only_trend = {"trend_results": shared["trend_results"]}
    out = run("reporter", "generate_report", {"output_dir": str(tmp_path)}, only_trend)
    assert out["headline"]["total_revenue"] == shared["trend_results"]["total_revenue"]
    with pytest.raises(ValueError, match="analysis_results"):
        run("reporter", "generate_report", {"output_dir": str(tmp_path)}, {"cleaned_records": []})


def test_every_report_gives_one_total_revenue_and_says_what_periods_leave_out(
    shared: dict[str, Any], truth: dict[str, Any], tmp_path: Path
) -> None:
    # Given: the records and their trend, but no statistical analysis (the second demo)...
    sd = {k: shared[k] for k in ("cleaned_records", "trend_results")}
    out = run("reporter", "generate_report", {"output_dir": str(tmp_path)}, sd)
    h = out["headline"]
    # Then: the total is every analysed record's revenue, as with the analysis...
    assert h["total_revenue"] == pytest.approx(sum(col(truth["clean"], "revenue")), abs=0.01)
    trend = shared["trend_results"]
    assert trend["skipped_records"] > 0  # the dataset has records with impossible dates
    # ...and the period table says what it leaves out.
    assert h["revenue_in_periods"] == trend["total_revenue"] < h["total_revenue"]
    assert h["records_without_a_date"] == trend["skipped_records"]
    assert f"{trend['skipped_records']} records without a usable date" in out["content"]


def test_records_failing_validation_are_left_out_of_every_figure_and_chart(
    shared: dict[str, Any], truth: dict[str, Any], tmp_path: Path
) -> None:
    # Given: a validation, and a trend and a report told to leave out what it failed...
    sd = {"cleaned_records": shared["cleaned_records"]}
    sd["validation"] = run("validator", "validate_records", {}, sd)
    failed = set(sd["validation"]["failed_ids"])
    assert len(failed) == 15
    valid = [r for r in truth["clean"] if r["order_id"] not in failed]
    sd["trend_results"] = run(
        "analyzer", "trend_analysis", {"period": "quarterly", "validation_key": "validation"}, sd
    )
    stats = run("analyzer", "statistical_analysis", {"validation_key": "validation"}, sd)
    out = run(
        "reporter",
        "generate_report",
        {"output_dir": str(tmp_path), "validation_key": "validation"},
        sd,
    )
    # Then: every figure is over the valid records only...
    dated = [r for r in valid if iso(r["order_date"]) is not None]
    assert sd["trend_results"]["records_used"] == len(dated)
    assert sd["trend_results"]["failed_validation_left_out"] == 15
    assert stats["record_count"] == len(valid) and stats["failed_validation_left_out"] == 15
    h = out["headline"]
    assert h["records_analysed"] == len(valid)
    assert h["total_revenue"] == pytest.approx(sum(col(valid, "revenue")), abs=0.01)
    assert h["records_failing_validation"] == 15
    # ...the region chart's table too (an unknown region fails validation, so it is gone)...
    regions: dict[str, float] = defaultdict(float)
    for r in valid:
        regions[r["region"]] += float(r["revenue"])
    table = out["content"].split("## Revenue by region", 1)[1].split("\n\n")[1]
    cells = [[x.strip() for x in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    rows = {region: revenue for region, _orders, revenue in cells}
    assert rows == {region: f"{total:,.2f}" for region, total in regions.items()}
    # ...and the report says so.
    assert "15 records failed validation (validation) and are left out" in out["content"]
    assert "did not leave them out" not in out["content"]


def test_a_report_whose_inputs_kept_invalid_rows_says_so(
    shared: dict[str, Any], tmp_path: Path
) -> None:
    sd = dict(shared)
    sd["validation"] = run("validator", "validate_records", {}, sd)
    out = run(
        "reporter",
        "generate_report",
        {"output_dir": str(tmp_path), "validation_key": "validation"},
        sd,
    )
    assert "the trend step did not leave them out" in out["content"]
    assert "the statistics step did not leave them out" in out["content"]
    with pytest.raises(ValueError, match="'nope'.*not a validate_records output"):
        run(
            "reporter",
            "generate_report",
            {"output_dir": str(tmp_path), "validation_key": "nope"},
            sd,
        )


def test_a_report_table_that_is_cut_says_how_much_it_leaves_out() -> None:
    from agents.reporter import _flat

    rows = _flat({"by_region": {f"r{i}": i for i in range(15)}, "series": list(range(12))}, 10)
    assert len(rows) == 11
    assert rows[0] == ["by_region.r0", "0"]
    assert rows[-1] == ["... 6 more not shown", ""]  # 15 + 1 rows, 10 shown
    everything = _flat({"series": list(range(12)), "nested": [{"a": 1}]}, 10)
    assert everything == [
        ["series", "0, 1, 2, 3, 4, 5, 6, 7, 8, 9 ... (2 more)"],
        ["nested", "a list of 1"],
    ]


def test_both_demo_reports_give_the_average_order_value_to_the_cent(
    shared: dict[str, Any], truth: dict[str, Any], tmp_path: Path
) -> None:
    # Given: the two demos' reports on the same records: the pipeline's, from the statistical
    # analysis, and Customer Intelligence's, from the records alone (it has no analysis)...
    with_stats = run("reporter", "generate_report", {"output_dir": str(tmp_path)}, dict(shared))
    only_records = {k: shared[k] for k in ("cleaned_records", "trend_results")}
    without = run("reporter", "generate_report", {"output_dir": str(tmp_path)}, only_records)
    # Then: one figure, given one way: to the cent, in the headline and in the report.
    expected = round(statistics.mean(col(truth["clean"], "revenue")), 2)
    for out in (with_stats, without):
        assert out["headline"]["average_order_value"] == expected
        assert f"| average order value | {expected:,.2f} |" in out["content"]
