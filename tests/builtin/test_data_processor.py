"""The built-in agents called as plain functions (no Redis, no workers): data_processor.

Expected values are computed here, independently, from the shipped CSV, never copied from
the agents' own output (``tests/builtin/conftest.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.builtin.common import NUMERIC, run


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
