"""The scorer agent: RFM (recency, frequency, monetary) scores per customer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from agents.base import StepInput
from agents.records import (
    Record,
    customer_summaries,
    mean,
    num,
    parse_date,
    percentile,
    records_from,
)
from agents.registry import Agent

scorer = Agent("scorer", description="RFM scores and segments per customer")

SEGMENTS = ("champions", "loyal", "promising", "needs_attention", "at_risk", "lost")


class ScoreParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_key: str = "cleaned_records"
    as_of: str | None = None  # ISO date; default: the last order date in the data
    top_n: int = Field(default=10, ge=0)


class CustomerScore(BaseModel):
    customer_id: str
    recency_days: int
    frequency: int
    monetary: float
    r: int
    f: int
    m: int
    score: int
    segment: str


class ScoreOutput(BaseModel):
    as_of: str
    records_scored: int
    customers_unscored: int
    average_score: float
    score_distribution: dict[str, int]
    segments: dict[str, int]
    quintile_cutoffs: dict[str, list[float]]
    top_customers: list[CustomerScore]


@scorer.task(params=ScoreParams, output=ScoreOutput, reads=lambda p: [p.input_key])
def score_records(step: StepInput[ScoreParams]) -> ScoreOutput:
    """Score R, F and M 1–5 by quintile; the sum (3–15) ranks, the pattern segments."""
    p = step.parameters
    records = records_from(step.require(p.input_key), p.input_key)
    return rfm(records, p.as_of, p.top_n, p.input_key)


class SegmentScoreParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    as_of: str | None = None
    top_n: int = Field(default=3, ge=0)


class SegmentScore(BaseModel):
    segment: str
    customers: int
    orders: int
    revenue: float
    average_score: float
    segments: dict[str, int]
    top_customers: list[CustomerScore]


@scorer.task(params=SegmentScoreParams, output=SegmentScore)
def score_segment(step: StepInput[SegmentScoreParams]) -> SegmentScore:
    """A map's item ``{"segment": ..., "records": [...]}``: RFM scores within the segment
    (its own quintiles), its revenue and its best customers."""
    item = step.item
    if not isinstance(item, dict) or "segment" not in item:
        raise ValueError(f"score_segment takes a segment with its records, not {item!r}")
    records = records_from(item, f"segment {item['segment']}")
    scored = rfm(records, step.parameters.as_of, step.parameters.top_n, str(item["segment"]))
    return SegmentScore(
        segment=str(item["segment"]),
        customers=scored.records_scored,
        orders=len(records),
        revenue=round(sum(num(r, "revenue") or 0.0 for r in records), 2),
        average_score=scored.average_score,
        segments=scored.segments,
        top_customers=scored.top_customers,
    )


def rfm(records: list[Record], as_of_raw: str | None, top_n: int, where: str) -> ScoreOutput:
    """RFM scores of the customers in ``records``, cut at their own quintiles."""
    summaries = customer_summaries(records)
    dated = {cid: c for cid, c in summaries.items() if c.last_order is not None}
    if not dated:
        raise ValueError(f"no customer in {where!r} has an order with a valid date")
    as_of = _as_of(as_of_raw, [c.last_order for c in dated.values() if c.last_order])
    recency = {cid: (as_of - c.last_order).days for cid, c in dated.items() if c.last_order}
    frequency = {cid: c.orders for cid, c in dated.items()}
    monetary = {cid: round(c.revenue, 2) for cid, c in dated.items()}
    cuts = {
        "recency_days": _quintiles(list(recency.values())),
        "frequency": _quintiles([float(v) for v in frequency.values()]),
        "monetary": _quintiles(list(monetary.values())),
    }
    scores = []
    for cid in sorted(dated):
        # Fewer days since the last order is better, so recency's scale is reversed.
        r = 6 - _bin(recency[cid], cuts["recency_days"])
        f = _bin(frequency[cid], cuts["frequency"])
        m = _bin(monetary[cid], cuts["monetary"])
        scores.append(
            CustomerScore(
                customer_id=cid,
                recency_days=recency[cid],
                frequency=frequency[cid],
                monetary=monetary[cid],
                r=r,
                f=f,
                m=m,
                score=r + f + m,
                segment=_segment(r, f, m),
            )
        )
    ranked = sorted(scores, key=lambda s: (-s.score, -s.monetary, s.customer_id))
    distribution = Counter(s.score for s in scores)
    segments = Counter(s.segment for s in scores)
    avg = mean([float(s.score) for s in scores])
    return ScoreOutput(
        as_of=as_of.isoformat(),
        records_scored=len(scores),
        customers_unscored=len(summaries) - len(dated),
        average_score=round(avg or 0.0, 4),
        score_distribution={str(k): distribution[k] for k in sorted(distribution)},
        segments={s: segments[s] for s in SEGMENTS},
        quintile_cutoffs=cuts,
        top_customers=ranked[:top_n],
    )


def _as_of(raw: str | None, last_orders: list[date]) -> date:
    if raw is None:
        return max(last_orders)
    day = parse_date(raw)
    if day is None:
        raise ValueError(f"as_of {raw!r} is not an ISO date")
    return day


def _quintiles(xs: Sequence[float]) -> list[float]:
    return [round(percentile(xs, q) or 0.0, 4) for q in (20, 40, 60, 80)]


def _bin(x: float, cuts: list[float]) -> int:
    """1 for values at or below the 20th percentile … 5 above the 80th."""
    return 1 + sum(x > c for c in cuts)


def _segment(r: int, f: int, m: int) -> str:
    if r >= 4 and f >= 4 and m >= 4:
        return "champions"
    if r >= 3 and f >= 3:
        return "loyal"
    if r >= 4:
        return "promising"
    if r <= 2 and (f >= 3 or m >= 3):
        return "at_risk"
    if r <= 2:
        return "lost"
    return "needs_attention"
