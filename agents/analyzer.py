"""The analyzer agent: descriptive statistics, outliers, correlations and trends."""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.base import StepInput
from agents.records import (
    Record,
    ValidOnly,
    mean,
    median,
    num,
    numeric_fields,
    paired,
    parse_date,
    passing,
    pearson,
    percentile,
    period_of,
    record_id,
    records_from,
    rounded,
    std,
    totals_by,
    values_of,
)
from agents.registry import Agent

analyzer = Agent("analyzer", description="Statistics and trends computed from the records")

# --------------------------------------------------------------------------- statistics


class StatsParams(ValidOnly):
    model_config = ConfigDict(extra="forbid")

    analysis_type: Literal["basic", "comprehensive"] = "comprehensive"
    input_key: str = "cleaned_records"
    fields: list[str] | None = None  # default: every numeric field
    value_field: str = "revenue"  # the field outliers, breakdowns and insights are about
    z_threshold: float = Field(default=3.0, gt=0)
    max_categories: int = Field(default=20, ge=2)


class FieldStats(BaseModel):
    count: int
    sum: float
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    median: float | None
    p25: float | None = None
    p75: float | None = None


class Outliers(BaseModel):
    field: str
    method: str
    threshold: float
    count: int
    ids: list[str]
    values: list[float]


class Slice(BaseModel):
    count: int
    total: float
    share: float


class StatsOutput(BaseModel):
    analysis_type: str
    record_count: int
    failed_validation_left_out: int = 0
    fields: dict[str, FieldStats]
    outliers: Outliers | None
    correlations: dict[str, dict[str, float | None]]
    breakdowns: dict[str, dict[str, Slice]] = Field(default_factory=dict)
    insights: list[str]


@analyzer.task(params=StatsParams, output=StatsOutput, reads=lambda p: p.reads(p.input_key))
def statistical_analysis(step: StepInput[StatsParams]) -> StatsOutput:
    """Count, mean, std, median, outliers (|z| rule) and Pearson correlations."""
    p = step.parameters
    records, left_out = passing(
        records_from(step.require(p.input_key), p.input_key), step.shared_data, p
    )
    full = p.analysis_type == "comprehensive"
    available = numeric_fields(records)
    fields = p.fields if p.fields is not None else available
    unknown = [f for f in fields if f not in available]
    if unknown:
        raise ValueError(f"not numeric fields of the records: {unknown} (numeric: {available})")
    stats = {f: _field_stats(values_of(records, f), full) for f in fields}
    outliers = _outliers(records, p) if p.value_field in available else None
    # Basic: how each field relates to the value field; comprehensive: the full matrix.
    rows = fields if full else [p.value_field] if p.value_field in fields else []
    correlations = {
        a: {b: rounded(pearson(*paired(records, a, b))) for b in fields if b != a} for a in rows
    }
    breakdowns = _breakdowns(records, p) if full and p.value_field in available else {}
    out = StatsOutput(
        analysis_type=p.analysis_type,
        record_count=len(records),
        failed_validation_left_out=left_out,
        fields=stats,
        outliers=outliers,
        correlations=correlations,
        breakdowns=breakdowns,
        insights=[],
    )
    out.insights = _insights(out, p.value_field)
    return out


def _field_stats(xs: list[float], full: bool) -> FieldStats:
    return FieldStats(
        count=len(xs),
        sum=round(sum(xs), 2),
        mean=rounded(mean(xs)),
        std=rounded(std(xs)),
        min=min(xs, default=None),
        max=max(xs, default=None),
        median=rounded(median(xs)),
        p25=rounded(percentile(xs, 25)) if full else None,
        p75=rounded(percentile(xs, 75)) if full else None,
    )


def _outliers(records: list[Record], p: StatsParams) -> Outliers:
    """Values more than ``z_threshold`` sample standard deviations from the mean."""
    xs = values_of(records, p.value_field)
    m, s = mean(xs), std(xs)
    hits: list[tuple[str, float]] = []
    if m is not None and s:
        for i, r in enumerate(records):
            v = num(r, p.value_field)
            if v is not None and abs(v - m) / s > p.z_threshold:
                hits.append((record_id(r, i, p.id_field), v))
    return Outliers(
        field=p.value_field,
        method=f"zscore (|x - mean| / sample std > {p.z_threshold:g})",
        threshold=p.z_threshold,
        count=len(hits),
        ids=[h[0] for h in hits],
        values=[h[1] for h in hits],
    )


def _breakdowns(records: list[Record], p: StatsParams) -> dict[str, dict[str, Slice]]:
    """Value totals per category of every low-cardinality text field (e.g. region)."""
    total = sum(values_of(records, p.value_field))
    text_fields = [
        k
        for k in dict.fromkeys(k for r in records for k in r)
        if k != p.id_field and all(isinstance(r.get(k), str | None) for r in records)
    ]
    out: dict[str, dict[str, Slice]] = {}
    for field in text_fields:
        groups = totals_by(records, field, p.value_field)
        if 2 <= len(groups) <= p.max_categories:
            out[field] = {
                k: Slice(count=n, total=round(t, 2), share=round(t / total, 4) if total else 0.0)
                for k, (n, t) in groups.items()
            }
    return out


def _insights(out: StatsOutput, value: str) -> list[str]:
    """A few plain sentences, each read off a number above (nothing canned)."""
    notes: list[str] = []
    vs = out.fields.get(value)
    if vs and vs.mean is not None and vs.median is not None:
        notes.append(
            f"{value} averages {vs.mean:,.2f} per record (median {vs.median:,.2f}) "
            f"over {vs.count} records, {vs.sum:,.2f} in total"
        )
        if vs.median and vs.mean > 1.2 * vs.median:
            notes.append(
                f"{value} is right-skewed: the mean is {vs.mean / vs.median:.1f}x the median"
            )
    if out.outliers and out.outliers.count:
        notes.append(
            f"{out.outliers.count} {value} outliers by {out.outliers.method}: "
            f"{', '.join(out.outliers.ids[:5])}{' ...' if out.outliers.count > 5 else ''}"
        )
    corr = {b: r for b, r in out.correlations.get(value, {}).items() if r is not None}
    if corr:
        b, r = max(corr.items(), key=lambda kv: abs(kv[1]))
        strength = "strong" if abs(r) >= 0.7 else "moderate" if abs(r) >= 0.4 else "weak"
        sign = "positive" if r > 0 else "negative"
        notes.append(f"{value} has a {strength} {sign} correlation with {b} (r = {r:.2f})")
    for field, slices in out.breakdowns.items():
        top, s = next(iter(slices.items()))
        notes.append(f"{field} {top!r} leads with {s.share:.1%} of {value} ({s.count} records)")
    return notes


# --------------------------------------------------------------------------- trends


class TrendParams(ValidOnly):
    model_config = ConfigDict(extra="forbid")

    period: Literal["monthly", "quarterly"] = "quarterly"
    input_key: str = "cleaned_records"
    date_field: str = "order_date"
    value_field: str = "revenue"
    flat_threshold_pct: float = Field(default=1.0, ge=0)


class PeriodPoint(BaseModel):
    period: str
    revenue: float
    orders: int
    growth_pct: float | None


class TrendOutput(BaseModel):
    period: str
    periods: list[PeriodPoint]
    records_used: int
    skipped_records: int
    failed_validation_left_out: int = 0
    total_revenue: float
    overall_growth_pct: float | None
    cagr_pct: float | None
    slope_per_period: float | None
    slope_pct_of_mean: float | None
    direction: Literal["upward", "downward", "flat"]
    best_period: PeriodPoint
    worst_period: PeriodPoint


@analyzer.task(params=TrendParams, output=TrendOutput, reads=lambda p: p.reads(p.input_key))
def trend_analysis(step: StepInput[TrendParams]) -> TrendOutput:
    """Revenue per period, growth between periods and the least-squares direction."""
    p = step.parameters
    records, left_out = passing(
        records_from(step.require(p.input_key), p.input_key), step.shared_data, p
    )
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    skipped = 0
    for r in records:
        day, value = parse_date(r.get(p.date_field)), num(r, p.value_field)
        if day is None or value is None:
            skipped += 1
            continue
        key = period_of(day, p.period)
        totals[key] += value
        counts[key] += 1
    if not totals:
        raise ValueError(
            f"no record has both a valid {p.date_field!r} and a numeric {p.value_field!r}"
        )
    labels = sorted(totals)
    ys = [totals[k] for k in labels]
    points = [
        PeriodPoint(
            period=k,
            revenue=round(totals[k], 2),
            orders=counts[k],
            growth_pct=_growth(ys[i - 1], ys[i]) if i else None,
        )
        for i, k in enumerate(labels)
    ]
    slope = _slope(ys)
    avg = mean(ys)
    slope_pct = slope / avg * 100 if slope is not None and avg else None
    if slope_pct is None or abs(slope_pct) <= p.flat_threshold_pct:
        direction: Literal["upward", "downward", "flat"] = "flat"
    else:
        direction = "upward" if slope_pct > 0 else "downward"
    cagr = None
    if len(ys) > 1 and ys[0] > 0 and ys[-1] > 0:
        cagr = round(((ys[-1] / ys[0]) ** (1 / (len(ys) - 1)) - 1) * 100, 4)
    return TrendOutput(
        period=p.period,
        periods=points,
        records_used=len(records) - skipped,
        skipped_records=skipped,
        failed_validation_left_out=left_out,
        total_revenue=round(sum(ys), 2),
        overall_growth_pct=_growth(ys[0], ys[-1]) if len(ys) > 1 else None,
        cagr_pct=cagr,
        slope_per_period=rounded(slope, 2),
        slope_pct_of_mean=rounded(slope_pct),
        direction=direction,
        best_period=max(points, key=lambda pt: pt.revenue),
        worst_period=min(points, key=lambda pt: pt.revenue),
    )


def _growth(before: float, after: float) -> float | None:
    return round((after - before) / before * 100, 4) if before else None


def _slope(ys: list[float]) -> float | None:
    """Least-squares slope of the values against their period index."""
    if len(ys) < 2:
        return None
    xs = list(range(len(ys)))
    mx, my = mean(xs), mean(ys)
    assert mx is not None and my is not None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
