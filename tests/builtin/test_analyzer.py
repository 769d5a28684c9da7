"""The built-in agents called as plain functions (no Redis, no workers): analyzer.

Expected values are computed here, independently, from the shipped CSV, never copied from
the agents' own output (``tests/builtin/conftest.py``)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

import pytest

from tests.builtin.common import NUMERIC, col, iso, run


def test_statistics_match_the_statistics_module(
    shared: dict[str, Any], truth: dict[str, Any]
) -> None:
    out = shared["analysis_results"]
    clean = truth["clean"]
    assert out["record_count"] == len(clean)
    for field in NUMERIC:
        xs = col(clean, field)
        got = out["fields"][field]
        assert got["count"] == len(xs)
        assert got["mean"] == pytest.approx(statistics.mean(xs), abs=1e-3)
        assert got["std"] == pytest.approx(statistics.stdev(xs), abs=1e-3)
        assert got["median"] == pytest.approx(statistics.median(xs), abs=1e-3)
        assert got["min"] == min(xs) and got["max"] == max(xs)
        assert got["sum"] == pytest.approx(sum(xs), abs=0.01)
    rev = col(clean, "revenue")
    for other in ("marketing_spend", "quantity"):
        r = statistics.correlation(rev, col(clean, other))
        assert out["correlations"]["revenue"][other] == pytest.approx(r, abs=1e-3)
    assert out["correlations"]["revenue"]["marketing_spend"] > 0.7
    assert out["insights"] and all(isinstance(s, str) for s in out["insights"])


def test_outliers_are_the_z_score_outliers(shared: dict[str, Any], truth: dict[str, Any]) -> None:
    clean = truth["clean"]
    rev = col(clean, "revenue")
    m, s = statistics.mean(rev), statistics.stdev(rev)
    expected = [r["order_id"] for r in clean if abs(float(r["revenue"]) - m) / s > 3]
    out = shared["analysis_results"]["outliers"]
    assert out["field"] == "revenue" and "zscore" in out["method"]
    assert out["ids"] == expected
    assert out["count"] == len(expected) == 6  # the planted bulk orders
    assert all(int(r["quantity"]) >= 50 for r in clean if r["order_id"] in expected)


def test_basic_analysis_is_smaller(shared: dict[str, Any]) -> None:
    out = run("analyzer", "statistical_analysis", {"analysis_type": "basic"}, shared)
    assert list(out["correlations"]) == ["revenue"]
    assert out["breakdowns"] == {}
    assert out["fields"]["revenue"]["p25"] is None


def _period_totals(clean: list[dict[str, str]], monthly: bool) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for r in clean:
        d = iso(r["order_date"])
        if d is not None:
            key = f"{d.year}-{d.month:02d}" if monthly else f"{d.year}-Q{(d.month + 2) // 3}"
            totals[key] += float(r["revenue"])
    return dict(sorted(totals.items()))


def test_quarterly_trend(shared: dict[str, Any], truth: dict[str, Any]) -> None:
    out = shared["trend_results"]
    expected = _period_totals(truth["clean"], monthly=False)
    assert [p["period"] for p in out["periods"]] == list(expected) and len(expected) == 8
    for p, want in zip(out["periods"], expected.values(), strict=True):
        assert p["revenue"] == pytest.approx(want, abs=0.01)
    ys = list(expected.values())
    assert out["periods"][1]["growth_pct"] == pytest.approx((ys[1] - ys[0]) / ys[0] * 100, abs=1e-3)
    assert out["overall_growth_pct"] == pytest.approx((ys[-1] - ys[0]) / ys[0] * 100, abs=1e-3)
    slope, _ = statistics.linear_regression(range(len(ys)), ys)
    assert out["slope_per_period"] == pytest.approx(slope, abs=0.01)
    assert out["direction"] == "upward"
    assert out["best_period"]["period"] == max(expected, key=lambda k: expected[k])
    assert out["worst_period"]["period"] == min(expected, key=lambda k: expected[k])
    bad_dates = sum(iso(r["order_date"]) is None for r in truth["clean"])
    assert out["skipped_records"] == bad_dates == 2


def test_monthly_trend(shared: dict[str, Any], truth: dict[str, Any]) -> None:
    out = run("analyzer", "trend_analysis", {"period": "monthly"}, shared)
    expected = _period_totals(truth["clean"], monthly=True)
    assert [p["period"] for p in out["periods"]] == list(expected) and len(expected) == 24


def test_flat_series_is_flat() -> None:
    records = [{"order_date": f"2024-{m:02d}-01", "revenue": 100.0} for m in range(1, 13)]
    out = run("analyzer", "trend_analysis", {"period": "monthly"}, {"cleaned_records": records})
    assert out["direction"] == "flat" and out["overall_growth_pct"] == 0
