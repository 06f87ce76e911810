"""Latency of the ledger's readers (ledger/reader.py) on SQLite and on PostgreSQL with a big ledger:
100,000 overdue transactions (three attempts each in their timelines), first page of 100 rows, a deep
page by cursor, one timeline, and the reconcilers' cross-check of 1,000 IDs; plus what the
PostgreSQL reader's connection per call costs on its own (connect + close).

    .venv/bin/python bench/reads.py [--rows 100000] [--rounds 20] [--backend both|sqlite|postgresql]

PostgreSQL: a scratch database on 127.0.0.1:5432 (user postgres, trust auth), dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from syncwatch.config.models import Config
from syncwatch.ledger.postgres_store import PostgresStore
from syncwatch.ledger.reader import LedgerReader, open_queries

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
COLS = ("corr", "dest", "flow", "source", "changed_at", "opened_at", "deadline", "attempts", "timeline")


def rows(n: int, now: float) -> Iterator[tuple[Any, ...]]:
    trace = "ab" * 16
    for i in range(n):
        t = now - 86400 + i * 0.5
        tl = {
            "attempts": [
                [trace, f"{i:08x}{k:08x}", t + k * 10, t + k * 10 + 1, k + 1, "503", "http_503"] for k in range(3)
            ]
        }
        yield (f"ORD-{i:07d}", "erp", "orders", "storefront", t, t, t + 300, 3, json.dumps(tl))


def build_sqlite(cfg: Config, n: int, now: float) -> None:
    import sqlite3

    from syncwatch.ledger.schema import DDL

    cfg.storage.data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(cfg.storage.ledger_path)
    conn.executescript(DDL)
    conn.executemany(f"INSERT INTO open_tx ({', '.join(COLS)}) VALUES ({','.join('?' * len(COLS))})", rows(n, now))
    conn.commit()
    conn.close()


def build_postgresql(cfg: Config, dsn: str, n: int, now: float) -> None:
    PostgresStore(cfg).close()  # the schema as syncwatch creates it
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY open_tx ({', '.join(COLS)}) FROM STDIN") as copy:
            for row in rows(n, now):
                copy.write_row(row)
        cur.execute("ANALYZE open_tx")


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took), max(took)


def measure(name: str, reader: LedgerReader, n: int, rounds: int) -> None:
    _, cursor = reader.reconciliation("overdue", "orders", 100)
    for _ in range(49):  # to page 51
        _, cursor = reader.reconciliation("overdue", "orders", 100, cursor)
    ids = [f"ORD-{i:07d}" for i in range(0, n, max(1, n // 1000))][:1000]
    cases: list[tuple[str, Callable[[], object]]] = [
        ("overdue list, first page of 100", lambda: reader.reconciliation("overdue", None, 100)),
        ("overdue list, page 51 by cursor", lambda: reader.reconciliation("overdue", "orders", 100, cursor)),
        ("one transaction's timeline", lambda: reader.timeline(f"ORD-{n // 2:07d}")),
        ("states of 1,000 IDs (reconcilers)", lambda: reader.states_of("orders", ids)),
    ]
    for label, fn in cases:
        median, worst = timed(fn, rounds)
        print(f"{name:10s} {label:36s} median {median:7.2f} ms  max {worst:7.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    a = ap.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        if a.backend in ("both", "sqlite"):
            cfg = Config.model_validate({"storage": {"data_dir": f"{tmp}/sqlite"}})
            build_sqlite(cfg, a.rows, now - 3600 * 12)
            measure("sqlite", open_queries(cfg), a.rows, a.rounds)
        if a.backend in ("both", "postgresql"):
            db = f"syncwatch_bench_reads_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{db}"')
            try:
                dsn = ADMIN.rsplit("/", 1)[0] + "/" + db
                Path(tmp, "dsn").write_text(dsn)
                storage = {"data_dir": f"{tmp}/pg", "backend": "postgresql", "postgresql": {"dsn_file": f"{tmp}/dsn"}}
                cfg = Config.model_validate({"storage": storage})
                build_postgresql(cfg, dsn, a.rows, now - 3600 * 12)
                measure("postgresql", open_queries(cfg), a.rows, a.rounds)
                median, worst = timed(
                    lambda: psycopg.connect(dsn, application_name="syncwatch-reader").close(), a.rounds
                )
                print(f"{'postgresql':10s} {'connect + close alone':36s} median {median:7.2f} ms  max {worst:7.2f} ms")
            finally:
                with psycopg.connect(ADMIN, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
