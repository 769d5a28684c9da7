"""Fixtures of the built-in agents' tests: the dataset's facts derived independently with
the ``csv`` and ``statistics`` modules (never copied from the agents' own output), and the
original design's sequential steps run on it."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest

from tests.builtin.common import raw_rows, run


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    """The dataset's facts, derived with the standard library only."""
    raw = raw_rows()
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
