"""The built-in agents called as plain functions (no Redis, no workers): the dataset and
the registry.

Expected values are computed here, independently, from the shipped CSV, never copied from
the agents' own output (``tests/builtin/conftest.py``)."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agents.registry import BUILTIN_MODULES
from tests.builtin.common import CSV_PATH, ROOT, iso, registry


def test_dataset_has_the_planted_shape(truth: dict[str, Any]) -> None:
    raw, unique = truth["raw"], truth["unique"]
    assert len(raw) == 1250
    assert len(raw) - len(unique) == 42  # ~3% exact duplicates
    assert truth["null_rows"] == 25  # ~2% rows with empty cells
    assert truth["repaired"] == {"revenue": 8, "region": 5, "customer_email": 4}
    assert truth["dropped"] == 8
    dates = sorted(d for r in unique if (d := iso(r["order_date"])))
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
