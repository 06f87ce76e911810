"""The handoff table's row format (issue 16, part two): a follower's batch as one compact row (what
syncwatch does, ledger/handoff.py) against one typed row per event, written with COPY or with
executemany; and the leader's drain of the compact rows. Per format: ms per batch written, WAL
bytes per event, on the machine's PostgreSQL (127.0.0.1:5432, a scratch database).

Usage: .venv/bin/python bench/handoff.py [--batches 20] [--events 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "support")]

import psycopg
from pg_support import dsn, scratch_database

from syncwatch.config.models import Config
from syncwatch.ledger.postgres_store import PostgresStore
from syncwatch.ledger.records import Event

TYPED = """CREATE TABLE handoff_typed(
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, trace_id bytea, span_id bytea, corr text, flow text,
    stage smallint, source text, dest text, start_s double precision, end_s double precision,
    changed_at double precision, attempt integer, code text, error text, idem text, received double precision)"""
COLS = "trace_id, span_id, corr, flow, stage, source, dest, start_s, end_s, changed_at, attempt, code, error, idem, received"


def events(n: int, batch: int) -> list[Event]:
    now = time.time()
    out = []
    for i in range(n):
        stage = (0, 1, 2)[i % 3]
        out.append(
            Event(
                os.urandom(16),
                os.urandom(8),
                f"SO-{batch}-{i // 3:06d}",
                "orders",
                stage,
                "storefront",
                "erp",
                now - 1,
                now,
                now - 1 if stage == 0 else None,
                1 if stage == 1 else None,
                "200" if stage == 1 else None,
                None,
                f"k-{batch}-{i}" if stage == 2 else None,
                now,
            )
        )
    return out


def wal(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    batches = [events(args.events, b) for b in range(args.batches)]
    total = args.batches * args.events
    with scratch_database("syncwatch_handoff_bench") as db, psycopg.connect(dsn(db), autocommit=True) as conn:
        dsn_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"handoff-bench-{os.getpid()}.dsn"
        dsn_file.write_text(dsn(db))
        try:
            store = PostgresStore(
                Config.model_validate({"storage": {"backend": "postgresql", "postgresql": {"dsn_file": str(dsn_file)}}})
            )
        finally:
            dsn_file.unlink()
        conn.execute(TYPED)
        results = []

        def measure(name: str, write) -> None:
            w0, t0 = wal(conn), time.perf_counter()
            for batch in batches:
                write(batch)
            elapsed = time.perf_counter() - t0
            results.append((name, elapsed / args.batches * 1000, (wal(conn) - w0) / total))

        measure("compact row per batch (syncwatch)", store.hand_off)

        def copy(batch: list[Event]) -> None:
            with conn.transaction(), conn.cursor().copy(f"COPY handoff_typed ({COLS}) FROM STDIN") as cp:
                for ev in batch:
                    cp.write_row(ev)

        measure("typed row per event, COPY", copy)

        def many(batch: list[Event]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(f"INSERT INTO handoff_typed ({COLS}) VALUES ({','.join(['%s'] * 15)})", batch)

        measure("typed row per event, executemany", many)
        t0 = time.perf_counter()
        drained = 0
        while True:
            store.begin()
            got = store.drain_handoff()
            store.commit()
            if not got:
                break
            drained += len(got)
        drain = time.perf_counter() - t0
        store.close()
    print(f"{args.batches} batches x {args.events} events (a third each source, attempt, confirm)")
    for name, ms, per_event in results:
        print(f"  {name:38s} {ms:8.1f} ms per batch written   {per_event:6.0f} WAL bytes per event")
    print(f"  leader's drain of the compact rows: {drained / drain:,.0f} events/s (select, delete, decode)")


if __name__ == "__main__":
    main()
