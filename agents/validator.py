"""The validator agent: business rules that cleaning does not (and should not) fix."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from agents.base import StepInput
from agents.records import REGION_MARKETS, Record, num, parse_date, record_id, records_from
from agents.registry import Agent

validator = Agent("validator", description="Checks records against named business rules")

RuleName = Literal[
    "email_format",
    "revenue_consistency",
    "positive_quantity",
    "known_region",
    "date_parses",
    "discount_range",
]
ALL_RULES: list[RuleName] = list(get_args(RuleName))
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")


class ValidateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_key: str = "cleaned_records"
    rules: list[RuleName] = Field(default_factory=lambda: list(ALL_RULES))
    tolerance: float = Field(default=0.01, ge=0)  # revenue may differ by this much (cents)
    known_regions: list[str] | None = None  # default: the regions of the reference table
    id_field: str = "order_id"
    sample_size: int = Field(default=20, ge=0)


class ValidateOutput(BaseModel):
    records_validated: int
    passed_validation: int
    failed_validation: int
    pass_rate: float
    rules_applied: list[str]
    failures_by_rule: dict[str, int]
    sample_failed_ids: list[str]
    failed_ids: list[str]  # every one, so later steps can leave them out (ValidOnly)


Check = Callable[[Record], bool]


def _checks(p: ValidateParams) -> dict[str, Check]:
    """Each rule as a predicate; a missing value fails the rule, it cannot pass it."""
    regions = set(p.known_regions if p.known_regions is not None else REGION_MARKETS)

    def revenue_ok(r: Record) -> bool:
        q, price, d, rev = (num(r, f) for f in ("quantity", "unit_price", "discount", "revenue"))
        if q is None or price is None or d is None or rev is None:
            return False
        # 1e-9 absorbs float noise so a difference of exactly one cent still passes.
        return abs(q * price * (1 - d) - rev) <= p.tolerance + 1e-9

    def quantity_ok(r: Record) -> bool:
        q = num(r, "quantity")
        return q is not None and q > 0

    def discount_ok(r: Record) -> bool:
        d = num(r, "discount")
        return d is not None and 0 <= d < 1

    return {
        "email_format": lambda r: (
            isinstance(r.get("customer_email"), str)
            and EMAIL.match(r["customer_email"]) is not None
        ),
        "revenue_consistency": revenue_ok,
        "positive_quantity": quantity_ok,
        "known_region": lambda r: r.get("region") in regions,
        "date_parses": lambda r: parse_date(r.get("order_date")) is not None,
        "discount_range": discount_ok,
    }


@validator.task(params=ValidateParams, output=ValidateOutput, reads=lambda p: [p.input_key])
def validate_records(step: StepInput[ValidateParams]) -> ValidateOutput:
    """Apply the named rules to every record; count failures per rule and overall."""
    p = step.parameters
    records = records_from(step.require(p.input_key), p.input_key)
    rules = list(dict.fromkeys(p.rules))
    checks = _checks(p)
    failures = dict.fromkeys(rules, 0)
    failed_ids: list[str] = []
    for i, r in enumerate(records):
        broken = [rule for rule in rules if not checks[rule](r)]
        for rule in broken:
            failures[rule] += 1
        if broken:
            failed_ids.append(record_id(r, i, p.id_field))
    passed = len(records) - len(failed_ids)
    return ValidateOutput(
        records_validated=len(records),
        passed_validation=passed,
        failed_validation=len(failed_ids),
        pass_rate=round(passed / len(records), 4),
        rules_applied=list(rules),
        failures_by_rule=failures,
        sample_failed_ids=failed_ids[: p.sample_size],
        failed_ids=failed_ids,
    )
