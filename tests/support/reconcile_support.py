"""Real PostgreSQL and MariaDB for the reconciliation tests: uniquely named databases created and
dropped per test, and the flash-sale data set of issue 14 (storefront in PostgreSQL, ERP in MariaDB)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncmy
import asyncpg

PG = dict(host="127.0.0.1", port=5432, user="postgres")
MY = dict(host="127.0.0.1", port=3306, user="root", password="")
HOUR = 3600.0


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(database="postgres", **PG)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def my_admin(sql: str, db: str | None = None) -> None:
    conn = await asyncmy.connect(database=db, autocommit=True, **MY)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
    finally:
        conn.close()


class Databases:
    """One PostgreSQL and one MariaDB database with unique names; dropped by drop()."""

    def __init__(self) -> None:
        self.pg = unique("sw_shop")
        self.my = unique("sw_erp")

    def create(self) -> Databases:
        asyncio.run(pg_admin(f"CREATE DATABASE {self.pg}"))
        asyncio.run(my_admin(f"CREATE DATABASE {self.my}"))
        return self

    def drop(self) -> None:
        asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {self.pg} WITH (FORCE)"))
        asyncio.run(my_admin(f"DROP DATABASE IF EXISTS {self.my}"))

    @property
    def pg_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.pg}"

    @property
    def my_url(self) -> str:
        return f"mysql://root@127.0.0.1:3306/{self.my}"

    async def pg_exec(self, sql: str, rows: list[tuple] | None = None) -> None:
        conn = await asyncpg.connect(database=self.pg, **PG)
        try:
            if rows is None:
                await conn.execute(sql)
            else:
                await conn.executemany(sql, rows)
        finally:
            await conn.close()

    async def my_exec(self, sql: str, rows: list[tuple] | None = None) -> None:
        conn = await asyncmy.connect(database=self.my, autocommit=True, **MY)
        try:
            async with conn.cursor() as cur:
                if rows is None:
                    await cur.execute(sql)
                else:
                    for i in range(0, len(rows), 5000):
                        await cur.executemany(sql, rows[i : i + 5000])
        finally:
            conn.close()


STOREFRONT_DDL = """
CREATE TABLE orders(
    order_id   bigint PRIMARY KEY,
    email      text NOT NULL,
    total      numeric(10,2) NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX orders_updated ON orders(updated_at);
"""
ERP_DDL = """
CREATE TABLE sales_orders(
    record_id         int AUTO_INCREMENT PRIMARY KEY,
    external_order_id varchar(64) NOT NULL,
    created_at        datetime(3) NOT NULL,
    KEY by_external (external_order_id)
)
"""
SOURCE_QUERY = (
    "SELECT order_id AS id, updated_at AS changed_at FROM orders "
    "WHERE updated_at >= :window_start AND updated_at < :window_end"
)
DEST_QUERY = "SELECT external_order_id AS id, record_id, created_at AS arrived_at FROM sales_orders"


@dataclass
class FlashSale:
    """3,200 orders over 48 h ending an hour ago; what the ERP got of them."""

    now: float
    orders: dict[int, float] = field(default_factory=dict)  # order ID -> changed_at
    missing: set[int] = field(default_factory=set)
    duplicated: set[int] = field(default_factory=set)
    late: set[int] = field(default_factory=set)
    traced: list[int] = field(default_factory=list)

    @classmethod
    def make(
        cls, n: int = 3200, missing: int = 140, duplicated: int = 5, late: int = 30, traced: int = 20, seed: int = 14
    ) -> FlashSale:
        rnd = random.Random(seed)
        now = time.time()
        sale = cls(now=now)
        start = float(int(now - 49 * HOUR))  # whole seconds: DATETIME(3) keeps milliseconds only
        for i in range(n):
            sale.orders[100_000 + i] = start + i * (48 * HOUR / n)
        ids = list(sale.orders)
        rnd.shuffle(ids)
        sale.missing = set(ids[:missing])
        sale.duplicated = set(ids[missing : missing + duplicated])
        sale.late = set(ids[missing + duplicated : missing + duplicated + late])
        # Traced: some lost (the ledger has them overdue), the rest confirmed.
        sale.traced = sorted(ids[:5]) + sorted(
            ids[missing + duplicated + late : missing + duplicated + late + traced - 5]
        )
        return sale

    def erp_rows(self) -> Iterator[tuple[str, datetime]]:
        for order_id, changed in sorted(self.orders.items()):
            if order_id in self.missing:
                continue
            lag = 2 * HOUR if order_id in self.late else 30.0
            arrived = datetime.fromtimestamp(changed + lag, UTC).replace(tzinfo=None)
            yield str(order_id), arrived
            if order_id in self.duplicated:
                yield str(order_id), arrived.replace(microsecond=0)

    async def load(self, dbs: Databases) -> None:
        await dbs.pg_exec(STOREFRONT_DDL)
        await dbs.pg_exec(
            "INSERT INTO orders VALUES ($1, $2, $3, $4, $4)",
            [(oid, f"buyer{oid}@example.com", 19.99, datetime.fromtimestamp(t, UTC)) for oid, t in self.orders.items()],
        )
        await dbs.my_exec(ERP_DDL)
        await dbs.my_exec(
            "INSERT INTO sales_orders(external_order_id, created_at) VALUES (%s, %s)", list(self.erp_rows())
        )


def reconciler_config(dbs: Databases, **extra) -> dict:
    return {
        "type": "sql",
        "name": "shop-erp",
        "interval": "1s",
        "lookback": "50h",
        "databases": {
            "shop": {"url": dbs.pg_url, "password_env": "SHOP_DB_PASSWORD"},
            "erp": {"url": dbs.my_url},
        },
        "flows": {
            "orders": {
                "source": {"database": "shop", "query": SOURCE_QUERY},
                "destination": {"database": "erp", "query": DEST_QUERY},
            }
        },
        **extra,
    }
