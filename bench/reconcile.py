"""Reconcile 1,000,000 source IDs (PostgreSQL) against 1,000,000 destination rows (MariaDB) in one
cycle; print seconds, rows per second and the peak RSS of this process.

    .venv/bin/python bench/reconcile.py [--ids 1000000] [--batch 5000] [--missing 1000]

Both databases are the ones on this machine, in databases made for the run and dropped after. The
destination lacks `--missing` of the IDs, so findings are written as in real use. No ledger: every
ID is also "never traced", stored up to max_findings (10,000) and counted beyond it.
Targets: one cycle within 30 s and 200 MiB peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "support")]

from prometheus_client import CollectorRegistry
from reconcile_support import DEST_QUERY, SOURCE_QUERY, Databases

from syncwatch.config.models import default_flows
from syncwatch.ledger.queries import LedgerQueries
from syncwatch.reconcile.manager import ReconcileManager


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


async def load(dbs: Databases, n: int, missing: int) -> None:
    await dbs.pg_exec(
        "CREATE TABLE orders(order_id bigint PRIMARY KEY, updated_at timestamptz NOT NULL);"
        f"INSERT INTO orders SELECT g, now() - interval '2 hours' + g * interval '1 millisecond' "
        f"FROM generate_series(1, {n}) g;"
        "CREATE INDEX orders_updated ON orders(updated_at); ANALYZE orders;"
    )
    await dbs.my_exec(
        "CREATE TABLE sales_orders(record_id int AUTO_INCREMENT PRIMARY KEY, external_order_id varchar(64) NOT NULL, "
        "created_at datetime(3) NOT NULL, KEY by_external (external_order_id))"
    )
    # Every ID but each (n // missing)-th arrives, one minute after its change.
    step = max(1, n // missing) if missing else n + 1
    await dbs.my_exec(
        "INSERT INTO sales_orders(external_order_id, created_at) SELECT seq, UTC_TIMESTAMP(3) - INTERVAL 2 HOUR "
        f"+ INTERVAL seq * 1000 MICROSECOND + INTERVAL 60 SECOND FROM seq_1_to_{n} WHERE seq % {step} <> 0"
    )
    await dbs.my_exec("ANALYZE TABLE sales_orders")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ids", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--missing", type=int, default=1000)
    a = p.parse_args()
    dbs = Databases().create()
    try:
        t = time.perf_counter()
        asyncio.run(load(dbs, a.ids, a.missing))
        print(f"loaded {a.ids:,} IDs per side in {time.perf_counter() - t:.1f}s")
        source = SOURCE_QUERY
        config = {
            "type": "sql",
            "name": "bench",
            "lookback": "3h",
            "batch_size": a.batch,
            "databases": {"shop": {"url": dbs.pg_url}, "erp": {"url": dbs.my_url}},
            "flows": {
                "orders": {
                    "source": {"database": "shop", "query": source},
                    "destination": {"database": "erp", "query": DEST_QUERY},
                }
            },
        }
        with tempfile.TemporaryDirectory() as tmp:
            registry = CollectorRegistry()
            ledger = LedgerQueries(Path(tmp) / "ledger.db")
            m = ReconcileManager([config], default_flows(), Path(tmp), ledger, registry)
            before = rss_mib()
            t = time.perf_counter()
            ok = asyncio.run(m.run_once())
            seconds = time.perf_counter() - t
            r = m.runners[0]
            if not ok["bench"]:
                print(f"run failed: {r.last_error}")
                return 1
            res = r.last_results["orders"]
            counts = m.store.open_counts("bench", "orders")
            asyncio.run(m.stop())
        print(
            f"one cycle: {res.source_rows:,} source rows, {res.destination_rows:,} destination rows in {seconds:.1f}s "
            f"({res.source_rows / seconds:,.0f} IDs/s), batch {a.batch}"
        )
        print(f"found: missing {res.found['missing']:,}, never_traced {res.found['never_traced']:,} (stored: {counts})")
        print(f"peak RSS {rss_mib():.0f} MiB (before the cycle {before:.0f} MiB)")
        print(
            f"targets: <= 30 s {'met' if seconds <= 30 else 'MISSED'}, <= 200 MiB {'met' if rss_mib() <= 200 else 'MISSED'}"
        )
    finally:
        dbs.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
