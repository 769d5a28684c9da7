"""Generate agents/data/business_records.csv, the dataset the built-in agents ship with.

The file is committed; this script exists so anyone can see (and reproduce byte for
byte) how it was made and which defects were planted on purpose, since the agents'
tests and the end-to-end assertions depend on those defects being exactly there.

Planted, with a fixed seed (stdlib ``random`` only):

* 1,208 unique orders over 2023-01-01 .. 2024-12-31; order volume and prices grow
  every quarter with a Q4 peak and a Q1 dip, so revenue trends clearly upward.
* 42 exact duplicate rows (1,250 rows in all).
* 25 rows with empty cells: 17 repairable (8 revenue, recomputable from
  quantity/price/discount; 5 region and 4 customer_email, recoverable from the same
  customer's other orders) and 8 not (4 customer_id, 2 order_date, 2 with both
  unit_price and revenue missing).
* 6 bulk orders whose revenue is a far outlier (|z| > 3).
* 15 rows that each break exactly one validation rule: 4 malformed emails,
  3 revenues not equal to quantity*unit_price*(1-discount), 2 zero quantities,
  2 unknown regions, 2 impossible dates, 2 discounts of 1.00.

Usage: ``python scripts/make_sample_data.py [--output PATH]``.
"""

from __future__ import annotations

import argparse
import csv
import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

SEED = 20240601
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "agents" / "data" / "business_records.csv"
FIELDS = [
    "order_id",
    "order_date",
    "customer_id",
    "customer_email",
    "region",
    "product_category",
    "quantity",
    "unit_price",
    "discount",
    "revenue",
    "marketing_spend",
]
UNIQUE_ORDERS = 1208
DUPLICATES = 42
CUSTOMERS = 300
REGIONS = ["North", "South", "East", "West", "Central"]
# (category, low unit price, high unit price)
CATEGORIES = [
    ("Electronics", 180.0, 900.0),
    ("Furniture", 120.0, 650.0),
    ("Office Supplies", 8.0, 60.0),
    ("Software", 90.0, 480.0),
    ("Services", 150.0, 700.0),
]
DISCOUNTS = [0.0, 0.0, 0.0, 0.05, 0.05, 0.1, 0.1, 0.15, 0.2]
SEASON = [0.9, 1.0, 1.0, 1.2]  # Q1..Q4 volume factors
QUARTERLY_GROWTH = 1.06
FIRST_NAMES = [
    "ana",
    "ben",
    "chen",
    "dara",
    "eli",
    "fatima",
    "gus",
    "hana",
    "ivan",
    "jo",
    "kai",
    "lena",
    "milo",
    "nia",
    "omar",
    "pia",
    "quinn",
    "ravi",
    "sara",
    "tom",
]
LAST_NAMES = [
    "adams",
    "baker",
    "costa",
    "diaz",
    "evans",
    "fischer",
    "garcia",
    "hughes",
    "ito",
    "jensen",
    "khan",
    "lopez",
    "meyer",
    "nakamura",
    "okafor",
    "patel",
]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net"]


@dataclass(frozen=True)
class Customer:
    customer_id: str
    email: str
    region: str
    weight: float


def money(x: float) -> str:
    return f"{x:.2f}"


def revenue_of(quantity: int, unit_price: float, discount: float) -> float:
    return round(quantity * unit_price * (1 - discount), 2)


def make_customers(rng: random.Random) -> list[Customer]:
    # Zipf-like weights: a few heavy buyers, a long tail, as value tiers need.
    return [
        Customer(
            customer_id=f"CUST-{i:04d}",
            email=f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}{i}@{rng.choice(DOMAINS)}",
            region=rng.choice(REGIONS),
            weight=1.0 / (i**0.8),
        )
        for i in range(1, CUSTOMERS + 1)
    ]


def quarter_counts() -> list[int]:
    """Orders per quarter (largest-remainder rounding so they sum to UNIQUE_ORDERS)."""
    weights = [QUARTERLY_GROWTH**q * SEASON[q % 4] for q in range(8)]
    raw = [UNIQUE_ORDERS * w / sum(weights) for w in weights]
    counts = [int(r) for r in raw]
    by_remainder = sorted(range(8), key=lambda q: raw[q] - counts[q], reverse=True)
    for q in by_remainder[: UNIQUE_ORDERS - sum(counts)]:
        counts[q] += 1
    return counts


def quarter_days(q: int) -> list[date]:
    year, quarter = 2023 + q // 4, q % 4
    start = date(year, 3 * quarter + 1, 1)
    end = date(year + 1, 1, 1) if quarter == 3 else date(year, 3 * quarter + 4, 1)
    return [start + timedelta(days=d) for d in range((end - start).days)]


def make_orders(rng: random.Random, customers: list[Customer]) -> list[dict[str, str]]:
    weights = [c.weight for c in customers]
    orders: list[tuple[date, dict[str, str]]] = []
    for q, count in enumerate(quarter_counts()):
        days = quarter_days(q)
        inflation = 1 + 0.01 * q
        for _ in range(count):
            cust = rng.choices(customers, weights)[0]
            category, low, high = rng.choice(CATEGORIES)
            quantity = min(12, 1 + int(rng.expovariate(1 / 3)))
            price = round(rng.uniform(low, high) * inflation, 2)
            discount = rng.choice(DISCOUNTS)
            revenue = revenue_of(quantity, price, discount)
            spend = round(revenue * rng.uniform(0.06, 0.14) + rng.uniform(5, 40), 2)
            day = rng.choice(days)
            orders.append(
                (
                    day,
                    {
                        "order_date": day.isoformat(),
                        "customer_id": cust.customer_id,
                        "customer_email": cust.email,
                        "region": cust.region,
                        "product_category": category,
                        "quantity": str(quantity),
                        "unit_price": money(price),
                        "discount": money(discount),
                        "revenue": money(revenue),
                        "marketing_spend": money(spend),
                    },
                )
            )
    orders.sort(key=lambda o: (o[0], o[1]["customer_id"], o[1]["revenue"]))
    return [{"order_id": f"ORD-{i:05d}", **row} for i, (_, row) in enumerate(orders, 1)]


def plant_defects(rng: random.Random, rows: list[dict[str, str]]) -> set[int]:
    """Mutate chosen rows in place; return their indices (never duplicated later)."""
    orders_per_customer: dict[str, int] = {}
    for row in rows:
        orders_per_customer[row["customer_id"]] = orders_per_customer.get(row["customer_id"], 0) + 1
    regular = [i for i, r in enumerate(rows) if orders_per_customer[r["customer_id"]] >= 3]
    picked = rng.sample(regular, 6 + 25 + 15)
    it = iter(picked)

    def take(n: int) -> list[int]:
        return [next(it) for _ in range(n)]

    for i in take(6):  # bulk orders: consistent, but far out on revenue
        row = rows[i]
        row["product_category"] = "Electronics"
        quantity = rng.randint(50, 80)
        price, discount = float(row["unit_price"]), 0.1
        if price < 600:
            price = round(price + 600, 2)
        revenue = revenue_of(quantity, price, discount)
        row.update(quantity=str(quantity), unit_price=money(price), discount=money(discount))
        row.update(revenue=money(revenue), marketing_spend=money(revenue * 0.05))
    for i in take(8):
        rows[i]["revenue"] = ""
    for i in take(5):
        rows[i]["region"] = ""
    for i in take(4):
        rows[i]["customer_email"] = ""
    for i in take(4):
        rows[i]["customer_id"] = ""
    for i in take(2):
        rows[i]["order_date"] = ""
    for i in take(2):
        rows[i]["unit_price"] = rows[i]["revenue"] = ""
    broken_emails = ["{u}.example.com", "{u}@example", "{u} x@example.com", "{u}@@example.com"]
    for i, pattern in zip(take(4), broken_emails, strict=True):
        rows[i]["customer_email"] = pattern.format(u=rows[i]["customer_email"].split("@")[0])
    for i in take(3):
        rows[i]["revenue"] = money(float(rows[i]["revenue"]) + rng.choice([37.5, -12.25, 120.0]))
    for i in take(2):
        rows[i].update(quantity="0", revenue="0.00")
    for i in take(2):
        rows[i]["region"] = "Atlantis"
    for i in take(2):
        rows[i]["order_date"] = rows[i]["order_date"][:5] + "02-30"
    for i in take(2):
        rows[i].update(discount="1.00", revenue="0.00")
    return set(picked)


def build() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    rows = make_orders(rng, make_customers(rng))
    planted = plant_defects(rng, rows)
    sources = rng.sample([i for i in range(len(rows)) if i not in planted], DUPLICATES)
    out = list(rows)
    # Insert from the back so earlier positions stay valid; a copy lands near its original.
    for i in sorted(sources, reverse=True):
        out.insert(i + 1 + rng.randint(0, 5), dict(rows[i]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(build())


if __name__ == "__main__":
    main()
