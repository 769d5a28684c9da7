"""The built-in agents called as plain functions (no Redis, no workers): validator,
enricher, classifier, scorer.

Expected values are computed here, independently, from the shipped CSV, never copied from
the agents' own output (``tests/builtin/conftest.py``)."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from agents.base import StepInput
from tests.builtin.common import REGIONS, col, iso, registry, run


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
        "date_parses": lambda r: iso(r["order_date"]) is not None,
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
        d = iso(e["order_date"])
        assert e["order_quarter"] == (f"{d.year}-Q{(d.month + 2) // 3}" if d else None)
    # Rows with an impossible date or an unknown region cannot be fully enriched.
    incomplete = sum(iso(r["order_date"]) is None or r["region"] not in REGIONS for r in clean)
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
        d = iso(r["order_date"])
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
        assert s["revenue"] == pytest.approx(sum(col(rows, "revenue")), abs=0.01)
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
