"""What the built-in agents' tests share: the shipped dataset's path, a registry, and a
way to call a task as a plain function (no Redis, no workers)."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Any

from agents.base import StepInput
from agents.registry import load_agents

ROOT = Path(__file__).resolve().parents[2]
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


def raw_rows() -> list[dict[str, str]]:
    with CSV_PATH.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def iso(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def col(rows: list[dict[str, str]], field: str) -> list[float]:
    return [float(r[field]) for r in rows]
