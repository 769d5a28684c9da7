"""The built-in agents called as plain functions (no Redis, no workers).

Expected values are computed here, independently, from the shipped CSV with the
``csv`` and ``statistics`` modules, never copied from the agents' own output.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agents.base import StepInput
from agents.registry import BUILTIN_MODULES, load_agents

ROOT = Path(__file__).resolve().parents[1]
CSV_PATH = ROOT / "agents" / "data" / "business_records.csv"
NUMERIC = ["quantity", "unit_price", "discount", "revenue", "marketing_spend"]
REGIONS = {"North", "South", "East", "West", "Central"}

registry = load_agents()


def run(agent: str, task: str, params: dict[str, Any], shared: dict[str, Any]) -> Any:
    tt = registry.get_task(agent, task)
    step = StepInput[Any](
        workflow_id="wf-test",
        step_id=f"{agent}.{task}",
        agent_id=agent,
        task_type=task,
        parameters=tt.validate_params(params),
        shared_data=shared,
    )
    return tt.run(step).output


# --------------------------------------------------------------------------- independent truth


def _raw_rows() -> list[dict[str, str]]:
    with CSV_PATH.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _iso(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    """The dataset's facts, derived with the standard library only."""
    raw = _raw_rows()
    unique: list[dict[str, str]] = []
    seen: set[tuple[str, ...]] = set()
    for row in raw:
        key = tuple(row.values())
        if key not in seen:
            seen.add(key)
            unique.append(row)
    by_customer: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in unique:
        by_customer[row["customer_id"]].append(row)
    clean: list[dict[str, str]] = []
    repaired: Counter[str] = Counter()
    dropped = 0
    for row in unique:
        row = dict(row)
        if row["revenue"] == "" and "" not in (row["quantity"], row["unit_price"], row["discount"]):
            q, p, d = int(row["quantity"]), float(row["unit_price"]), float(row["discount"])
            row["revenue"] = f"{round(q * p * (1 - d), 2):.2f}"
            repaired["revenue"] += 1
        for field in ("region", "customer_email"):
            others = [o[field] for o in by_customer[row["customer_id"]] if o[field]]
            if row[field] == "" and row["customer_id"] and others:
                row[field] = Counter(others).most_common(1)[0][0]
                repaired[field] += 1
        if "" in row.values():
            dropped += 1
        else:
            clean.append(row)
    return {
        "raw": raw,
        "unique": unique,
        "clean": clean,
        "repaired": dict(repaired),
        "dropped": dropped,
        "null_rows": sum("" in r.values() for r in unique),
    }


def _col(rows: list[dict[str, str]], field: str) -> list[float]:
    return [float(r[field]) for r in rows]


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    """The original design's sequential steps, run in order on the shipped dataset."""
    sd: dict[str, Any] = {}
    sd["extracted_records"] = run("data_processor", "extract_data", {"source": "business_db"}, sd)
    sd["cleaned_records"] = run(
        "data_processor",
        "clean_data",
        {"validation_rules": ["remove_duplicates", "check_nulls"]},
        sd,
    )
    sd["analysis_results"] = run(
        "analyzer", "statistical_analysis", {"analysis_type": "comprehensive"}, sd
    )
    sd["trend_results"] = run("analyzer", "trend_analysis", {"period": "quarterly"}, sd)
    return sd


# --------------------------------------------------------------------------- dataset


def test_dataset_has_the_planted_shape(truth: dict[str, Any]) -> None:
    raw, unique = truth["raw"], truth["unique"]
    assert len(raw) == 1250
    assert len(raw) - len(unique) == 42  # ~3% exact duplicates
    assert truth["null_rows"] == 25  # ~2% rows with empty cells
    assert truth["repaired"] == {"revenue": 8, "region": 5, "customer_email": 4}
    assert truth["dropped"] == 8
    dates = sorted(d for r in unique if (d := _iso(r["order_date"])))
    assert dates[0] >= date(2023, 1, 1) and dates[-1] <= date(2024, 12, 31)
    assert len({r["region"] for r in unique if r["region"]}) == 6  # five + one unknown


def test_generator_is_deterministic_and_matches_the_committed_file(tmp_path: Path) -> None:
    outs = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for out in outs:
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_sample_data.py"), "--output", str(out)],
            check=True,
        )
    assert outs[0].read_bytes() == outs[1].read_bytes() == CSV_PATH.read_bytes()


# --------------------------------------------------------------------------- registry and params


def test_load_agents_registers_all_builtins() -> None:
    ids = {a.agent_id for a in registry}
    assert {m.rsplit(".", 1)[1] for m in BUILTIN_MODULES} <= ids
    assert "generate_report" in registry.get_agent("reporter").task_types


@pytest.mark.parametrize(
    ("agent", "task", "params"),
    [
        ("data_processor", "extract_data", {"source": "business_db"}),
        (
            "data_processor",
            "clean_data",
            {"validation_rules": ["remove_duplicates", "check_nulls"]},
        ),
        ("analyzer", "statistical_analysis", {"analysis_type": "comprehensive"}),
        ("analyzer", "trend_analysis", {"period": "quarterly"}),
        ("reporter", "generate_report", {"format": "executive_summary"}),
        ("validator", "validate_records", {}),
        ("enricher", "enrich_records", {}),
        ("classifier", "classify_records", {}),
        ("scorer", "score_records", {}),
    ],
)
def test_original_parameters_validate_and_extras_are_refused(
    agent: str, task: str, params: dict[str, Any]
) -> None:
    tt = registry.get_task(agent, task)
    tt.validate_params(params)
    with pytest.raises(ValidationError):
        tt.validate_params({**params, "no_such_parameter": 1})


# --------------------------------------------------------------------------- data_processor


def test_extract_parses_every_row(shared: dict[str, Any], truth: dict[str, Any]) -> None:
    out = shared["extracted_records"]
    raw = truth["raw"]
    assert out["record_count"] == len(out["records"]) == len(raw)
    assert out["fields"] == list(raw[0])
    for got, want in zip(out["records"], raw, strict=True):
        for field, text in want.items():
            if text == "":
                assert got[field] is None
            elif field in NUMERIC:
                assert got[field] == pytest.approx(float(text))
            else:
                assert got[field] == text
    json.dumps(out, allow_nan=False)


def test_extract_limit_and_user_files(tmp_path: Path) -> None:
    assert run("data_processor", "extract_data", {"limit": 7}, {})["record_count"] == 7
    rows = [{"id": "a", "revenue": 10.5, "note": ""}, {"id": "b", "revenue": 3}]
    js = tmp_path / "orders.json"
    js.write_text(json.dumps(rows))
    out = run("data_processor", "extract_data", {"source": str(js)}, {})
    assert out["records"] == [
        {"id": "a", "revenue": 10.5, "note": None},
        {"id": "b", "revenue": 3, "note": None},
    ]
    cs = tmp_path / "orders.csv"
    cs.write_text("id,qty,price\nx,2,1.50\ny,,nan\n")
    out = run("data_processor", "extract_data", {"source": str(cs)}, {})
    assert out["records"] == [
        {"id": "x", "qty": 2, "price": 1.5},
        {"id": "y", "qty": None, "price": "nan"},
    ]


def test_extract_unknown_source_names_it() -> None:
    with pytest.raises(FileNotFoundError, match="no_such_db"):
        run("data_processor", "extract_data", {"source": "no_such_db"}, {})


def test_clean_dedupes_repairs_and_drops(shared: dict[str, Any], truth: dict[str, Any]) -> None:
    out = shared["cleaned_records"]
    assert out["input_count"] == len(truth["raw"])
    assert out["duplicates_removed"] == len(truth["raw"]) - len(truth["unique"])
    assert out["repaired"] == truth["repaired"]
    assert out["null_rows_dropped"] == truth["dropped"]
    assert out["output_count"] == len(out["records"]) == len(truth["clean"])
    assert out["rules_applied"] == ["remove_duplicates", "check_nulls"]
    assert [r["order_id"] for r in out["records"]] == [r["order_id"] for r in truth["clean"]]
    for got, want in zip(out["records"], truth["clean"], strict=True):
        assert None not in got.values()
        assert got["revenue"] == pytest.approx(float(want["revenue"]))
        assert got["region"] == want["region"]


def test_clean_without_rules_keeps_everything(shared: dict[str, Any]) -> None:
    out = run("data_processor", "clean_data", {"validation_rules": []}, shared)
    assert out["output_count"] == shared["extracted_records"]["record_count"]
    assert out["duplicates_removed"] == out["null_rows_dropped"] == 0


def test_missing_or_empty_input_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="extracted_records"):
        run("data_processor", "clean_data", {}, {})
    with pytest.raises(ValueError, match="empty"):
        run("analyzer", "statistical_analysis", {}, {"cleaned_records": {"records": []}})


# --------------------------------------------------------------------------- analyzer


def test_statistics_match_the_statistics_module(
    shared: dict[str, Any], truth: dict[str, Any]
) -> None:
    out = shared["analysis_results"]
    clean = truth["clean"]
    assert out["record_count"] == len(clean)
    for field in NUMERIC:
        xs = _col(clean, field)
        got = out["fields"][field]
        assert got["count"] == len(xs)
        assert got["mean"] == pytest.approx(statistics.mean(xs), abs=1e-3)
        assert got["std"] == pytest.approx(statistics.stdev(xs), abs=1e-3)
        assert got["median"] == pytest.approx(statistics.median(xs), abs=1e-3)
        assert got["min"] == min(xs) and got["max"] == max(xs)
        assert got["sum"] == pytest.approx(sum(xs), abs=0.01)
    rev = _col(clean, "revenue")
    for other in ("marketing_spend", "quantity"):
        r = statistics.correlation(rev, _col(clean, other))
        assert out["correlations"]["revenue"][other] == pytest.approx(r, abs=1e-3)
    assert out["correlations"]["revenue"]["marketing_spend"] > 0.7
    assert out["insights"] and all(isinstance(s, str) for s in out["insights"])


def test_outliers_are_the_z_score_outliers(shared: dict[str, Any], truth: dict[str, Any]) -> None:
    clean = truth["clean"]
    rev = _col(clean, "revenue")
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
        d = _iso(r["order_date"])
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
    bad_dates = sum(_iso(r["order_date"]) is None for r in truth["clean"])
    assert out["skipped_records"] == bad_dates == 2


def test_monthly_trend(shared: dict[str, Any], truth: dict[str, Any]) -> None:
    out = run("analyzer", "trend_analysis", {"period": "monthly"}, shared)
    expected = _period_totals(truth["clean"], monthly=True)
    assert [p["period"] for p in out["periods"]] == list(expected) and len(expected) == 24


def test_flat_series_is_flat() -> None:
    records = [{"order_date": f"2024-{m:02d}-01", "revenue": 100.0} for m in range(1, 13)]
    out = run("analyzer", "trend_analysis", {"period": "monthly"}, {"cleaned_records": records})
    assert out["direction"] == "flat" and out["overall_growth_pct"] == 0


# --------------------------------------------------------------------------- parallel agents


def test_validator_counts_each_rule(shared: dict[str, Any], truth: dict[str, Any]) -> None:
    clean = truth["clean"]
    email = re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)*\.[A-Za-z]{2,}$")

    def consistent(r: dict[str, str]) -> bool:
        q, p, d = float(r["quantity"]), float(r["unit_price"]), float(r["discount"])
        return abs(q * p * (1 - d) - float(r["revenue"])) <= 0.01 + 1e-9

    rules: dict[str, Callable[[dict[str, str]], bool]] = {
        "email_format": lambda r: bool(email.match(r["customer_email"])),
        "revenue_consistency": consistent,
        "positive_quantity": lambda r: int(r["quantity"]) > 0,
        "known_region": lambda r: r["region"] in REGIONS,
        "date_parses": lambda r: _iso(r["order_date"]) is not None,
        "discount_range": lambda r: 0 <= float(r["discount"]) < 1,
    }
    expected = {name: sum(not ok(r) for r in clean) for name, ok in rules.items()}
    failing = [r["order_id"] for r in clean if not all(ok(r) for ok in rules.values())]
    out = run("validator", "validate_records", {}, shared)
    assert out["failures_by_rule"] == expected
    assert expected == {
        "email_format": 4,
        "revenue_consistency": 3,
        "positive_quantity": 2,
        "known_region": 2,
        "date_parses": 2,
        "discount_range": 2,
    }
    assert out["records_validated"] == len(clean)
    assert out["failed_validation"] == len(failing) == 15
    assert out["passed_validation"] == len(clean) - len(failing)
    assert out["pass_rate"] == pytest.approx((len(clean) - len(failing)) / len(clean), abs=1e-4)
    assert out["sample_failed_ids"] == failing[:20]
    assert out["failed_ids"] == failing


def test_enricher_derives_fields(shared: dict[str, Any], truth: dict[str, Any]) -> None:
    clean = truth["clean"]
    out = run("enricher", "enrich_records", {"include_records": True}, shared)
    assert out["records_processed"] == len(clean)
    orders = Counter(r["customer_id"] for r in clean)
    lifetime: dict[str, float] = defaultdict(float)
    for r in clean:
        lifetime[r["customer_id"]] += float(r["revenue"])
    for e in out["records"]:
        assert e["customer_order_count"] == orders[e["customer_id"]]
        assert e["customer_lifetime_revenue"] == pytest.approx(lifetime[e["customer_id"]], abs=0.01)
        d = _iso(e["order_date"])
        assert e["order_quarter"] == (f"{d.year}-Q{(d.month + 2) // 3}" if d else None)
    # Rows with an impossible date or an unknown region cannot be fully enriched.
    incomplete = sum(_iso(r["order_date"]) is None or r["region"] not in REGIONS for r in clean)
    assert out["successfully_enriched"] == len(clean) - incomplete
    cells = sum(len(e) for e in out["records"])
    filled = sum(v is not None for e in out["records"] for v in e.values())
    assert out["data_completeness"] == pytest.approx(filled / cells, abs=1e-4)
    assert set(out["new_fields_added"]) <= set(out["records"][0])
    assert run("enricher", "enrich_records", {}, shared)["records"] is None


def _customer_revenue(clean: list[dict[str, str]]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for r in clean:
        totals[r["customer_id"]] += float(r["revenue"])
    return totals


def test_classifier_tiers_by_percentile(shared: dict[str, Any], truth: dict[str, Any]) -> None:
    totals = _customer_revenue(truth["clean"])
    cuts = statistics.quantiles(totals.values(), n=100, method="inclusive")
    high, medium = cuts[84], cuts[49]  # 85th and 50th percentiles
    out = run("classifier", "classify_records", {}, shared)
    assert out["customers_classified"] == len(totals)
    assert out["thresholds"]["high_value"] == pytest.approx(high, abs=0.01)
    assert out["thresholds"]["medium_value"] == pytest.approx(medium, abs=0.01)
    assert out["categories"] == {
        "high_value": sum(v >= high for v in totals.values()),
        "medium_value": sum(medium <= v < high for v in totals.values()),
        "low_value": sum(v < medium for v in totals.values()),
    }
    high_share = sum(v for v in totals.values() if v >= high) / sum(totals.values())
    assert out["revenue_share"]["high_value"] == pytest.approx(high_share, abs=1e-4)
    assert sum(out["revenue_share"].values()) == pytest.approx(1, abs=1e-3)


def test_classifier_rejects_impossible_shares() -> None:
    with pytest.raises(ValidationError):
        registry.get_task("classifier", "classify_records").validate_params(
            {"high_value_share": 0.6, "medium_value_share": 0.5}
        )


def test_scorer_rfm(shared: dict[str, Any], truth: dict[str, Any]) -> None:
    clean = truth["clean"]
    last: dict[str, date] = {}
    for r in clean:
        d = _iso(r["order_date"])
        if d is not None:
            last[r["customer_id"]] = max(last.get(r["customer_id"], d), d)
    as_of = max(last.values())
    out = run("scorer", "score_records", {"top_n": 5}, shared)
    assert out["as_of"] == as_of.isoformat() == "2024-12-31"
    assert out["records_scored"] == len(last)
    assert sum(out["segments"].values()) == len(last)
    assert sum(out["score_distribution"].values()) == len(last)
    recency_cuts = statistics.quantiles(
        [(as_of - d).days for d in last.values()], n=5, method="inclusive"
    )
    assert out["quintile_cutoffs"]["recency_days"] == pytest.approx(recency_cuts, abs=1e-3)
    totals = _customer_revenue(clean)
    orders = Counter(r["customer_id"] for r in clean)
    top = out["top_customers"]
    assert len(top) == 5 and [t["score"] for t in top] == sorted(
        (t["score"] for t in top), reverse=True
    )
    for t in top:
        assert t["recency_days"] == (as_of - last[t["customer_id"]]).days
        assert t["frequency"] == orders[t["customer_id"]]
        assert t["monetary"] == pytest.approx(totals[t["customer_id"]], abs=0.01)
        assert all(1 <= t[k] <= 5 for k in "rfm") and t["score"] == t["r"] + t["f"] + t["m"]
    biggest = max(totals, key=lambda c: totals[c])
    assert top[0]["customer_id"] == biggest and top[0]["segment"] == "champions"


def test_segments_scores_and_concentration_for_a_map(
    shared: dict[str, Any], truth: dict[str, Any]
) -> None:
    clean = truth["clean"]
    by_region: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in clean:
        by_region[r["region"]].append(r)
    seg = run("data_processor", "segment_records", {"by": "region"}, shared)
    assert [i["segment"] for i in seg["items"]] == sorted(by_region)
    assert [len(i["records"]) for i in seg["items"]] == [
        len(by_region[k]) for k in sorted(by_region)
    ]
    assert (seg["segments"], seg["records_unsegmented"]) == (len(by_region), 0)

    # Each segment scored on its own records, as a map's item.
    scorer = registry.get_task("scorer", "score_segment")
    scores = []
    for index, item in enumerate(seg["items"]):
        step = StepInput[Any](
            workflow_id="wf-test", step_id=f"map[{index}]", agent_id="scorer",
            task_type="score_segment", parameters=scorer.validate_params({}),
            item=item, index=index,
        )  # fmt: skip
        scores.append(scorer.run(step).output)
    for s, k in zip(scores, sorted(by_region), strict=True):
        rows = by_region[k]
        assert s["segment"] == k and s["orders"] == len(rows)
        assert s["customers"] == len({r["customer_id"] for r in rows})
        assert s["revenue"] == pytest.approx(sum(_col(rows, "revenue")), abs=0.01)
        assert len(s["top_customers"]) == min(3, s["customers"])

    total = sum(s["revenue"] for s in scores)
    out = run(
        "classifier", "classify_concentration", {"threshold": 0.3}, {"segment_scores": scores}
    )
    top = max(scores, key=lambda s: s["revenue"])
    assert (out["top_segment"], out["top_share"]) == (
        top["segment"],
        round(top["revenue"] / total, 4),
    )
    assert out["label"] == ("concentrated" if top["revenue"] / total >= 0.3 else "balanced")
    assert sum(out["shares"].values()) == pytest.approx(1.0, abs=1e-3)
    strict = run(
        "classifier", "classify_concentration", {"threshold": 0.2}, {"segment_scores": scores}
    )
    assert strict["label"] == "concentrated"


# --------------------------------------------------------------------------- reporter


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
    total = sum(_col(truth["clean"], "revenue"))
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
    assert h["total_revenue"] == pytest.approx(sum(_col(truth["clean"], "revenue")), abs=0.01)
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
    dated = [r for r in valid if _iso(r["order_date"]) is not None]
    assert sd["trend_results"]["records_used"] == len(dated)
    assert sd["trend_results"]["failed_validation_left_out"] == 15
    assert stats["record_count"] == len(valid) and stats["failed_validation_left_out"] == 15
    h = out["headline"]
    assert h["records_analysed"] == len(valid)
    assert h["total_revenue"] == pytest.approx(sum(_col(valid, "revenue")), abs=0.01)
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
    expected = round(statistics.mean(_col(truth["clean"], "revenue")), 2)
    for out in (with_stats, without):
        assert out["headline"]["average_order_value"] == expected
        assert f"| average order value | {expected:,.2f} |" in out["content"]
