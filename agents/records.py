"""Shared helpers of the built-in agents: loading, typed access, statistics, customers.

Agents pass records to each other through ``shared_data`` as plain JSON (lists of
dicts). Every agent reads them through these helpers so that "what counts as a
number", "what counts as a date" and "which percentile" are decided exactly once.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel

Record = dict[str, Any]

DATA_DIR = Path(__file__).resolve().parent / "data"
DATASETS: dict[str, Path] = {"business_db": DATA_DIR / "business_records.csv"}

# Static reference data: the sales regions the business knows and the market each
# belongs to. The validator's "known_region" rule and the enricher's "market" field
# must agree, so both read this one table.
REGION_MARKETS: dict[str, str] = {
    "North": "EMEA",
    "South": "LATAM",
    "East": "APAC",
    "West": "North America",
    "Central": "North America",
}

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


# --------------------------------------------------------------------------- loading


def parse_cell(text: str | None) -> int | float | str | None:
    """A CSV cell as JSON-ready data: empty → None, plain decimals → numbers.

    Only plain decimal notation becomes a number, so "nan"/"inf" (not JSON) and ids
    that merely look numeric to ``float`` stay strings.
    """
    if text is None:
        return None
    value = text.strip()
    if not value:
        return None
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    return value


def load_records(source: str) -> tuple[Path, list[str], list[Record]]:
    """Resolve ``source`` (a dataset name or a CSV/JSON path) and parse its rows."""
    path = DATASETS.get(source) or Path(source).expanduser()
    if not path.is_file():
        known = ", ".join(sorted(DATASETS))
        raise FileNotFoundError(
            f"unknown source {source!r}: not a shipped dataset ({known}) nor an existing file"
        )
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = list(reader.fieldnames or [])
            rows = [{k: parse_cell(row.get(k)) for k in fields} for row in reader]
        return path, fields, rows
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{path} must hold a JSON list of objects")
        fields = list(dict.fromkeys(k for r in data for k in r))
        rows = [{k: _json_cell(r.get(k)) for k in fields} for r in data]
        return path, fields, rows
    raise ValueError(f"unsupported source file type {suffix!r} for {path} (use .csv or .json)")


def _json_cell(value: Any) -> Any:
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def records_from(value: Any, key: str = "input") -> list[Record]:
    """The record list inside a shared_data value: a list, or a dict with ``records``."""
    records = value.get("records") if isinstance(value, dict) else value
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"shared_data[{key!r}] holds no record list")
    if not records:
        raise ValueError(f"shared_data[{key!r}] holds an empty record list")
    return records


class ValidOnly(BaseModel):
    """Parameters of a task that can leave out the records a validator failed.

    ``validation_key`` names the output of an earlier ``validator.validate_records``
    step; the records whose ids it lists as failed are left out of every figure.
    """

    validation_key: str | None = None
    id_field: str = "order_id"

    def reads(self, input_key: str) -> list[str]:
        return [input_key] if self.validation_key is None else [input_key, self.validation_key]


def passing(
    records: list[Record], shared: dict[str, Any], p: ValidOnly
) -> tuple[list[Record], int]:
    """The records the named validation did not fail, and how many it left out."""
    if p.validation_key is None:
        return records, 0
    value = shared.get(p.validation_key)
    failed = value.get("failed_ids") if isinstance(value, dict) else None
    if not isinstance(failed, list):
        raise ValueError(
            f"shared_data[{p.validation_key!r}] is not a validate_records output "
            "(it has no failed_ids list)"
        )
    out = set(map(str, failed))
    kept = [r for i, r in enumerate(records) if record_id(r, i, p.id_field) not in out]
    return kept, len(records) - len(kept)


def record_id(record: Record, index: int, id_field: str) -> str:
    """A record's id as the agents report it; its position when it has none."""
    return str(record.get(id_field, f"#{index}"))


# --------------------------------------------------------------------------- typed access


def num(record: Record, field: str) -> float | None:
    """The field as a float, or None when absent or not a finite number."""
    value = record.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def parse_date(value: Any) -> date | None:
    """An ISO date (or the date part of an ISO datetime), None if it does not parse."""
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def period_of(day: date, period: str) -> str:
    """The period label that sorts chronologically: ``2024-Q3`` or ``2024-07``."""
    if period == "quarterly":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return f"{day.year}-{day.month:02d}"


def numeric_fields(records: Sequence[Record]) -> list[str]:
    """Fields whose non-null values are all numbers (and that have at least one)."""
    fields = list(dict.fromkeys(k for r in records for k in r))
    found = []
    for field in fields:
        values = [r.get(field) for r in records if r.get(field) is not None]
        if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            found.append(field)
    return found


def values_of(records: Iterable[Record], field: str) -> list[float]:
    return [v for v in (num(r, field) for r in records) if v is not None]


# --------------------------------------------------------------------------- statistics


def mean(xs: Sequence[float]) -> float | None:
    return math.fsum(xs) / len(xs) if xs else None


def std(xs: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1), None below two values."""
    m = mean(xs)
    if m is None or len(xs) < 2:
        return None
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def percentile(xs: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks.

    Same definition as numpy's default and ``statistics.quantiles(method="inclusive")``.
    """
    if not xs:
        return None
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(xs: Sequence[float]) -> float | None:
    return percentile(xs, 50)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r of paired values, None if fewer than two pairs or no variance."""
    if len(xs) != len(ys) or len(xs) < 2:
        return None
    mx, my = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def paired(records: Iterable[Record], a: str, b: str) -> tuple[list[float], list[float]]:
    """Values of two fields from the records where both are numbers."""
    xs: list[float] = []
    ys: list[float] = []
    for r in records:
        x, y = num(r, a), num(r, b)
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def totals_by(
    records: Iterable[Record], field: str, value_field: str
) -> dict[str, tuple[int, float]]:
    """(record count, value total) per distinct value of ``field``, largest total first."""
    acc: dict[str, tuple[int, float]] = {}
    for r in records:
        key = str(r.get(field))
        n, total = acc.get(key, (0, 0.0))
        acc[key] = (n + 1, total + (num(r, value_field) or 0.0))
    return dict(sorted(acc.items(), key=lambda kv: (-kv[1][1], kv[0])))


def rounded(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


# --------------------------------------------------------------------------- customers


@dataclass
class CustomerSummary:
    """One customer's orders as the customer-level agents see them."""

    customer_id: str
    orders: int = 0
    revenue: float = 0.0
    first_order: date | None = None
    last_order: date | None = None


def customer_summaries(
    records: Iterable[Record],
    customer_field: str = "customer_id",
    value_field: str = "revenue",
    date_field: str = "order_date",
) -> dict[str, CustomerSummary]:
    """Per-customer order count, revenue and first/last valid order date.

    Records without a customer id are left out (they cannot be attributed); missing
    revenue counts as zero and unparseable dates are ignored.
    """
    out: dict[str, CustomerSummary] = {}
    for r in records:
        cid = r.get(customer_field)
        if cid is None or cid == "":
            continue
        s = out.setdefault(str(cid), CustomerSummary(str(cid)))
        s.orders += 1
        s.revenue += num(r, value_field) or 0.0
        day = parse_date(r.get(date_field))
        if day is not None:
            s.first_order = day if s.first_order is None else min(s.first_order, day)
            s.last_order = day if s.last_order is None else max(s.last_order, day)
    return out
