"""The classifier agent: value tiers of customers, cut where the data puts percentiles."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.base import StepInput
from agents.records import customer_summaries, percentile, records_from
from agents.registry import Agent

classifier = Agent("classifier", description="Sorts customers into value tiers by revenue")

TIERS = ("high_value", "medium_value", "low_value")


class ClassifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_key: str = "cleaned_records"
    high_value_share: float = Field(default=0.15, gt=0, lt=1)  # top 15% of customers
    medium_value_share: float = Field(default=0.35, ge=0, lt=1)  # the next 35%

    @model_validator(mode="after")
    def _shares_fit(self) -> ClassifyParams:
        if self.high_value_share + self.medium_value_share >= 1:
            raise ValueError("high_value_share + medium_value_share must be below 1")
        return self


class ClassifyOutput(BaseModel):
    customers_classified: int
    records_unattributed: int
    categories: dict[str, int]
    thresholds: dict[str, float]
    revenue_share: dict[str, float]
    assignments: dict[str, str]


@classifier.task(params=ClassifyParams, output=ClassifyOutput, reads=lambda p: [p.input_key])
def classify_records(step: StepInput[ClassifyParams]) -> ClassifyOutput:
    """Tier each customer by total revenue against the revenue percentiles."""
    p = step.parameters
    records = records_from(step.require(p.input_key), p.input_key)
    customers = customer_summaries(records)
    if not customers:
        raise ValueError(f"no record in {p.input_key!r} has a customer_id to classify")
    totals = [c.revenue for c in customers.values()]
    # A customer is high_value at or above the (1 - high share) percentile, etc.
    high = percentile(totals, 100 * (1 - p.high_value_share))
    medium = percentile(totals, 100 * (1 - p.high_value_share - p.medium_value_share))
    assert high is not None and medium is not None
    assignments = {
        cid: "high_value"
        if c.revenue >= high
        else "medium_value"
        if c.revenue >= medium
        else "low_value"
        for cid, c in sorted(customers.items())
    }
    grand = sum(totals)
    revenue = dict.fromkeys(TIERS, 0.0)
    for cid, tier in assignments.items():
        revenue[tier] += customers[cid].revenue
    return ClassifyOutput(
        customers_classified=len(customers),
        records_unattributed=len(records) - sum(c.orders for c in customers.values()),
        categories={t: sum(v == t for v in assignments.values()) for t in TIERS},
        thresholds={"high_value": round(high, 2), "medium_value": round(medium, 2)},
        revenue_share={t: round(revenue[t] / grand, 4) if grand else 0.0 for t in TIERS},
        assignments=assignments,
    )


class ConcentrationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_key: str = "segment_scores"  # a map's collected outputs: segment, revenue each
    threshold: float = Field(default=0.4, gt=0, le=1)


class ConcentrationOutput(BaseModel):
    label: str  # "concentrated" (one segment holds threshold or more of revenue) or "balanced"
    top_segment: str
    top_share: float
    shares: dict[str, float]
    segments_missing: int  # segments the map could not score (failed items)


@classifier.task(
    params=ConcentrationParams, output=ConcentrationOutput, reads=lambda p: [p.input_key]
)
def classify_concentration(step: StepInput[ConcentrationParams]) -> ConcentrationOutput:
    """Whether revenue is concentrated in one segment, from per-segment revenue."""
    p = step.parameters
    scored = step.require(p.input_key)
    if not isinstance(scored, list):
        raise ValueError(f"shared_data[{p.input_key!r}] is not a list of segment scores")
    rows = [s for s in scored if isinstance(s, dict) and "segment" in s and "revenue" in s]
    total = sum(float(s["revenue"]) for s in rows)
    if not rows or total <= 0:
        raise ValueError(f"shared_data[{p.input_key!r}] has no segment with revenue")
    shares = {str(s["segment"]): round(float(s["revenue"]) / total, 4) for s in rows}
    top = max(shares, key=lambda k: (shares[k], k))
    return ConcentrationOutput(
        label="concentrated" if shares[top] >= p.threshold else "balanced",
        top_segment=top,
        top_share=shares[top],
        shares=dict(sorted(shares.items())),
        segments_missing=len(scored) - len(rows),
    )
