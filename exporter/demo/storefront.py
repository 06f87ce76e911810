"""The storefront side of the flash sale: orders at four times normal volume, inventory
adjustments and customer updates, each marked as a source change and put on the queue. Orders are
also rows in the storefront's own database, and customers' shipping addresses are kept in an
address book that records who wrote each value when (the ground truth of write conflicts)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from syncwatch_instrument import SyncInstrument

from syncwatch.demo.databases import StorefrontDb
from syncwatch.demo.scenario import DemoSettings

STREETS = ("Harbour Road", "Linden Alley", "Mill Street", "Station Square", "Kings Way", "Elm Court")
CITIES = ("Hamburg", "Leeds", "Lyon", "Utrecht", "Porto", "Graz")
SKUS = ("TSHIRT-BLK-M", "TSHIRT-WHT-L", "HOODIE-GRY-S", "CAP-NAVY", "SNEAKER-42", "SOCKS-3PK", "TOTE-CANVAS")


@dataclass
class Record:
    at: float  # seconds after the start of the sale
    flow: str
    id: str
    payload: dict[str, Any]


def address(rng: random.Random) -> str:
    return f"{rng.randint(1, 250)} {rng.choice(STREETS)}, {rng.choice(CITIES)}"


def schedule(settings: DemoSettings) -> list[Record]:
    """Every record of the run and when it is produced, drawn from the seed."""
    rng = random.Random(settings.seed)
    window = settings.production_seconds
    records: list[Record] = []
    n_orders = settings.order_count
    for i in range(n_orders):
        at = window * i / n_orders + rng.uniform(0, window / n_orders)
        order_id = f"SO-{100001 + i}"
        lines = [
            {"sku": rng.choice(SKUS), "qty": rng.randint(1, 3), "unit_price": round(rng.uniform(9, 89), 2)}
            for _ in range(rng.randint(1, 3))
        ]
        records.append(
            Record(
                at,
                "orders",
                order_id,
                {
                    "id": order_id,
                    "currency": "EUR",
                    "lines": lines,
                    "total": round(sum(line["qty"] * line["unit_price"] for line in lines), 2),
                    "customer": {
                        "id": f"C-{rng.randint(1000, 9999)}",
                        "email": f"shopper{rng.randint(1, 99999)}@example.com",
                    },
                    "promotion": "FLASH40",
                },
            )
        )
    for kind, rate, make in (
        (
            "inventory",
            settings.inventory_rate,
            lambda i: {
                "id": f"ADJ-{200001 + i}",
                "sku": rng.choice(SKUS),
                "warehouse": "WH-EAST",
                "delta": -rng.randint(1, 5),
            },
        ),
        (
            "customers",
            settings.customer_rate,
            lambda i: {
                "id": f"CU-{300001 + i}",
                "customer_id": f"C-{7001 + i}",  # one update per customer: no storefront-only rewrites
                "email": f"shopper{rng.randint(1, 99999)}@example.com",
                "newsletter": rng.random() < 0.5,
                "shipping": {"address": address(rng)},
            },
        ),
    ):
        n = max(int(rate * window), 3)
        for i in range(n):
            payload = make(i)
            records.append(Record(window * i / n + rng.uniform(0, window / n), kind, payload["id"], payload))
    records.sort(key=lambda r: r.at)
    return records


@dataclass(frozen=True)
class AddressWrite:
    customer_id: str
    address: str
    writer: str  # the system that wrote it: the storefront, or the ERP's nightly sync
    at: float  # unix seconds


class Storefront:
    def __init__(self, records: list[Record], queue, sw: SyncInstrument, db: StorefrontDb | None = None):
        self.records = records
        self.by_id = {r.id: r for r in records}
        self.db = db
        self.address_writes: list[AddressWrite] = []
        self.queue = queue
        self.sw = sw
        self.sent: dict[str, str] = {}  # record ID -> flow, in the order produced
        self.changed_at: dict[str, float] = {}
        self.done = asyncio.Event()

    async def run(self) -> None:
        start = time.monotonic()
        try:
            for rec in self.records:
                delay = start + rec.at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                changed_at = time.time()
                if rec.flow == "orders" and self.db is not None:
                    self.db.add_order(rec.id, changed_at)
                elif rec.flow == "customers":
                    self.write_address(rec.payload["customer_id"], rec.payload["shipping"]["address"], "storefront")
                self.sw.source_changed(rec.id, flow=rec.flow, changed_at=changed_at)
                await self.queue.send(
                    {"flow": rec.flow, "id": rec.id, "changed_at": changed_at, "payload": rec.payload}
                )
                self.sent[rec.id] = rec.flow
                self.changed_at[rec.id] = changed_at
        finally:
            self.done.set()

    def write_address(self, customer_id: str, value: str, writer: str) -> None:
        self.address_writes.append(AddressWrite(customer_id, value, writer, time.time()))
