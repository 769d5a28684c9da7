"""The enricher agent: derives fields that downstream readers would otherwise recompute."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.base import StepInput
from agents.records import (
    REGION_MARKETS,
    Record,
    customer_summaries,
    num,
    parse_date,
    period_of,
    records_from,
)
from agents.registry import Agent

enricher = Agent("enricher", description="Adds period, size band, market and customer fields")

NEW_FIELDS = [
    "order_year",
    "order_quarter",
    "order_month",
    "order_size",
    "market",
    "customer_order_count",
    "customer_lifetime_revenue",
]


class EnrichParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_key: str = "cleaned_records"
    include_records: bool = False
    sample_size: int = Field(default=5, ge=0)
    small_below: float = 500.0  # revenue under this is a "small" order
    large_from: float = 2500.0  # revenue from this on is a "large" order

    @model_validator(mode="after")
    def _bands_ordered(self) -> EnrichParams:
        if self.small_below > self.large_from:
            raise ValueError("small_below must not exceed large_from")
        return self


class EnrichOutput(BaseModel):
    records_processed: int
    successfully_enriched: int
    new_fields_added: list[str]
    data_completeness: float
    order_sizes: dict[str, int]
    markets: dict[str, int]
    sample: list[dict[str, Any]]
    records: list[dict[str, Any]] | None = None


@enricher.task(params=EnrichParams, output=EnrichOutput, reads=lambda p: [p.input_key])
def enrich_records(step: StepInput[EnrichParams]) -> EnrichOutput:
    """Add period labels, size band, market and the customer's order count and revenue."""
    p = step.parameters
    records = records_from(step.require(p.input_key), p.input_key)
    customers = customer_summaries(records)
    enriched: list[Record] = []
    for r in records:
        day, revenue = parse_date(r.get("order_date")), num(r, "revenue")
        cust = customers.get(str(r.get("customer_id")))
        size = None
        if revenue is not None:
            size = (
                "small"
                if revenue < p.small_below
                else "large"
                if revenue >= p.large_from
                else "medium"
            )
        enriched.append(
            {
                **r,
                "order_year": day.year if day else None,
                "order_quarter": period_of(day, "quarterly") if day else None,
                "order_month": period_of(day, "monthly") if day else None,
                "order_size": size,
                "market": REGION_MARKETS.get(str(r.get("region"))),
                "customer_order_count": cust.orders if cust else None,
                "customer_lifetime_revenue": round(cust.revenue, 2) if cust else None,
            }
        )
    complete = sum(all(e[f] is not None for f in NEW_FIELDS) for e in enriched)
    cells = sum(len(e) for e in enriched)
    filled = sum(v is not None for e in enriched for v in e.values())
    return EnrichOutput(
        records_processed=len(records),
        successfully_enriched=complete,
        new_fields_added=list(NEW_FIELDS),
        data_completeness=round(filled / cells, 4) if cells else 0.0,
        order_sizes=dict(Counter(e["order_size"] or "unknown" for e in enriched).most_common()),
        markets=dict(Counter(e["market"] or "unmapped" for e in enriched).most_common()),
        sample=enriched[: p.sample_size],
        records=enriched if p.include_records else None,
    )
