"""The data_processor agent: gets records in and makes them fit to analyse."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from agents.base import StepInput
from agents.records import Record, load_records, num, records_from
from agents.registry import Agent

log = logging.getLogger("baton.agents.data_processor")

data_processor = Agent("data_processor", description="Extracts and cleans business records")


class ExtractParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = "business_db"
    limit: int | None = Field(default=None, ge=1)


class ExtractOutput(BaseModel):
    source: str
    path: str
    record_count: int
    fields: list[str]
    records: list[dict[str, Any]]


@data_processor.task(params=ExtractParams, output=ExtractOutput)
def extract_data(step: StepInput[ExtractParams]) -> ExtractOutput:
    """Read a shipped dataset by name, or a user's CSV/JSON file, into typed rows."""
    p = step.parameters
    path, fields, rows = load_records(p.source)
    if p.limit is not None:
        rows = rows[: p.limit]
    log.info("extracted %d records from %s", len(rows), path)
    return ExtractOutput(
        source=p.source, path=str(path), record_count=len(rows), fields=fields, records=rows
    )


Rule = Literal["remove_duplicates", "check_nulls"]
ALL_RULES: list[Rule] = list(get_args(Rule))


class CleanParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    validation_rules: list[Rule] = Field(default_factory=lambda: list(ALL_RULES))
    input_key: str = "extracted_records"


class CleanOutput(BaseModel):
    input_count: int
    output_count: int
    duplicates_removed: int
    null_rows_dropped: int
    dropped_by_field: dict[str, int]
    repaired: dict[str, int]
    rules_applied: list[str]
    records: list[dict[str, Any]]


@data_processor.task(params=CleanParams, output=CleanOutput, reads=lambda p: [p.input_key])
def clean_data(step: StepInput[CleanParams]) -> CleanOutput:
    """De-duplicate, repair what the data itself can supply, drop what it cannot."""
    p = step.parameters
    rows = [dict(r) for r in records_from(step.require(p.input_key), p.input_key)]
    input_count = len(rows)
    rules = list(dict.fromkeys(p.validation_rules))
    duplicates = 0
    if "remove_duplicates" in rules:
        rows, duplicates = _dedupe(rows)
    repaired: dict[str, int] = {}
    dropped: Counter[str] = Counter()
    if "check_nulls" in rules:
        repaired = _repair(rows)
        kept = []
        for r in rows:
            missing = [k for k, v in r.items() if v is None]
            dropped.update(missing)
            if not missing:
                kept.append(r)
        null_dropped, rows = len(rows) - len(kept), kept
    else:
        null_dropped = 0
    if not rows:
        raise ValueError(f"cleaning left no records out of {input_count}")
    log.info("cleaned %d → %d records", input_count, len(rows))
    return CleanOutput(
        input_count=input_count,
        output_count=len(rows),
        duplicates_removed=duplicates,
        null_rows_dropped=null_dropped,
        dropped_by_field=dict(sorted(dropped.items())),
        repaired=repaired,
        rules_applied=rules,
        records=rows,
    )


def _dedupe(rows: list[Record]) -> tuple[list[Record], int]:
    """Drop exact repeats (every field equal), keeping the first occurrence."""
    seen: set[tuple[tuple[str, str], ...]] = set()
    out = []
    for r in rows:
        key = tuple(sorted((k, repr(v)) for k, v in r.items()))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out, len(rows) - len(out)


def _repair(rows: list[Record]) -> dict[str, int]:
    """Fill nulls in place where the data determines the value; count per field.

    revenue follows from quantity × unit_price × (1 − discount); a customer's region
    and email are what their other orders say (the most common value). Identity
    fields (customer_id) and dates are never guessed.
    """
    repaired: Counter[str] = Counter()
    known: dict[str, dict[str, Counter[Any]]] = {"region": {}, "customer_email": {}}
    for r in rows:
        cid = r.get("customer_id")
        for field, by_customer in known.items():
            if cid is not None and r.get(field) is not None:
                by_customer.setdefault(cid, Counter())[r[field]] += 1
    for r in rows:
        cid = r.get("customer_id")
        if "revenue" in r and r["revenue"] is None:
            q, price, disc = num(r, "quantity"), num(r, "unit_price"), num(r, "discount")
            if q is not None and price is not None and disc is not None:
                r["revenue"] = round(q * price * (1 - disc), 2)
                repaired["revenue"] += 1
        for field, by_customer in known.items():
            counts = by_customer.get(cid) if cid is not None else None
            if field in r and r[field] is None and counts:
                r[field] = counts.most_common(1)[0][0]
                repaired[field] += 1
    return dict(sorted(repaired.items()))


class SegmentParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_key: str = "cleaned_records"
    by: str = "region"  # the record field whose values are the segments


class Segment(BaseModel):
    segment: str
    records: list[dict[str, Any]]


class SegmentOutput(BaseModel):
    by: str
    segments: int
    records_unsegmented: int  # records with no value in the field
    items: list[Segment]  # one per value found, by name: a map's list


@data_processor.task(params=SegmentParams, output=SegmentOutput, reads=lambda p: [p.input_key])
def segment_records(step: StepInput[SegmentParams]) -> SegmentOutput:
    """Split records by a field into the segments the data has (as many as it has), for a
    map to run a task once per segment."""
    p = step.parameters
    records = records_from(step.require(p.input_key), p.input_key)
    by: dict[str, list[Record]] = {}
    for r in records:
        value = r.get(p.by)
        if value not in (None, ""):
            by.setdefault(str(value), []).append(r)
    if not by:
        raise ValueError(f"no record in {p.input_key!r} has a value in {p.by!r}")
    return SegmentOutput(
        by=p.by,
        segments=len(by),
        records_unsegmented=len(records) - sum(len(v) for v in by.values()),
        items=[Segment(segment=k, records=by[k]) for k in sorted(by)],
    )
