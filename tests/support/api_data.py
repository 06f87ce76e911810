"""A ledger written with the schema's own DDL (the shape the ledger writer produces) for the query API
and web view tests: one confirmed order with its retries, overdue, pending, failed and duplicate rows,
in a SQLite file or in PostgreSQL (the same rows)."""

from __future__ import annotations

import json
import sqlite3

import psycopg
from pg_support import reset, storage_config
from snapshot_data import T0

from syncwatch.config.models import Config
from syncwatch.ledger.postgres_store import PostgresStore, resolve_dsn
from syncwatch.ledger.schema import DDL, STAGE_CONFIRM, STAGE_FAIL, corr_hash

TOKEN = "s3cr3t-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = T0 + 3600
TRACE = "ab" * 16


def span(n: int) -> str:
    return f"{n:016x}"


def ledger_rows() -> list[tuple[str, dict]]:
    """(table, columns) of every row, in the order they are written."""
    rows: list[tuple[str, dict]] = []
    # ord-1 -> erp: two 503s, then 201, confirmed; lag 42 s.
    timeline = {
        "attempts": [
            [TRACE, span(1), T0 + 1, T0 + 2, 1, "503", "http_503"],
            [TRACE, span(2), T0 + 4, T0 + 5, 2, "503", "http_503"],
            [TRACE, span(3), T0 + 13, T0 + 14, 3, "201", None],
        ],
        "close": [STAGE_CONFIRM, TRACE, span(4), T0 + 40, T0 + 42, None, "ord-1:erp"],
    }
    rows.append(
        (
            "closed_tx",
            dict(
                corr="ord-1",
                dest="erp",
                flow="orders",
                source="storefront",
                outcome="confirmed",
                changed_at=T0,
                opened_at=T0,
                deadline=T0 + 300,
                closed_at=T0 + 42,
                lag=42.0,
                source_trace=bytes.fromhex(TRACE),
                source_span=bytes.fromhex(span(9)),
                attempts=3,
                timeline=json.dumps(timeline),
                corr_hash=corr_hash("ord-1"),
            ),
        )
    )
    # 25 overdue orders (deadline passed), 3 pending ones, a failed one and an inventory duplicate.
    open_tx = dict(dest="erp", flow="orders", source="storefront")
    for i in range(25):
        tl = {"attempts": [[TRACE, span(100 + i), T0 + i, T0 + i + 1, 1, "429", "http_429"]]}
        rows.append(
            (
                "open_tx",
                dict(
                    corr=f"late-{i:02d}",
                    **open_tx,
                    changed_at=T0 + i,
                    opened_at=T0 + i,
                    deadline=T0 + 300 + i,
                    attempts=1,
                    timeline=json.dumps(tl),
                ),
            )
        )
    for i in range(3):
        rows.append(
            (
                "open_tx",
                dict(
                    corr=f"fresh-{i}",
                    **open_tx,
                    changed_at=NOW - 10,
                    opened_at=NOW - 10,
                    deadline=NOW + 290,
                    attempts=0,
                ),
            )
        )
    rows.append(
        (
            "open_tx",
            dict(
                corr="cust-1",
                dest="storefront",
                flow="customers",
                source="erp",
                changed_at=T0,
                opened_at=T0,
                deadline=T0 + 10,
                attempts=0,
            ),
        )
    )
    failed_tl = {
        "attempts": [[TRACE, span(200), T0, T0 + 1, 1, "500", "http_500"]],
        "close": [STAGE_FAIL, TRACE, span(201), T0 + 60, T0 + 60, "retries_exhausted", None],
    }
    rows.append(
        (
            "closed_tx",
            dict(
                corr="ord-9",
                **open_tx,
                outcome="failed",
                changed_at=T0,
                closed_at=T0 + 60,
                attempts=1,
                timeline=json.dumps(failed_tl),
                corr_hash=corr_hash("ord-9"),
            ),
        )
    )
    dup_tl = {
        "close": [STAGE_CONFIRM, TRACE, span(300), T0 + 5, T0 + 6, None, "adj-7"],
        "duplicates": [[TRACE, span(301), T0 + 20, T0 + 21, "adj-7"]],
    }
    rows.append(
        (
            "closed_tx",
            dict(
                corr="inv-7",
                dest="storefront",
                flow="inventory",
                source="wms",
                outcome="confirmed",
                changed_at=T0,
                closed_at=T0 + 6,
                lag=6.0,
                attempts=0,
                timeline=json.dumps(dup_tl),
                corr_hash=corr_hash("inv-7"),
            ),
        )
    )
    rows.append(
        (
            "applies",
            dict(
                idem="adj-7",
                corr="inv-7",
                dest="storefront",
                flow="inventory",
                first_at=T0 + 6,
                last_at=T0 + 21,
                applies=2,
            ),
        )
    )
    return rows


def _insert_sql(table: str, row: dict, mark: str) -> str:
    return f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join([mark] * len(row))})"


def build_ledger(path, rows: list[tuple[str, dict]] | None = None):
    """The rows (default: ledger_rows()) in a SQLite ledger file, with the schema's own DDL."""
    conn = sqlite3.connect(path)
    conn.executescript(DDL)
    for table, row in ledger_rows() if rows is None else rows:
        conn.execute(_insert_sql(table, row, "?"), tuple(row.values()))
    conn.commit()
    conn.close()


def build_pg_ledger(config: Config, rows: list[tuple[str, dict]] | None = None) -> None:
    """The rows (default: ledger_rows()) in the PostgreSQL ledger of `config` (storage.backend:
    postgresql), its schema made by syncwatch's own store."""
    PostgresStore(config).close()
    with psycopg.connect(resolve_dsn(config.storage.postgresql)) as conn:
        for table, row in ledger_rows() if rows is None else rows:
            conn.execute(_insert_sql(table, row, "%s"), tuple(row.values()))


def write_ledger(config: Config, rows: list[tuple[str, dict]] | None = None) -> None:
    """The rows in the ledger `config` names, on its backend."""
    if config.storage.backend == "postgresql":
        build_pg_ledger(config, rows)
    else:
        config.storage.data_dir.mkdir(parents=True, exist_ok=True)
        build_ledger(config.storage.ledger_path, rows)


def make_config(tmp_path, token=TOKEN, storage: dict | None = None) -> Config:
    """`storage`: more storage.* keys (e.g. pg_support.storage_config for PostgreSQL)."""
    return Config.model_validate(
        {"storage": {"data_dir": str(tmp_path / "data"), **(storage or {})}, "api": {"token": token}}
    )


def ledger_config(tmp_path, pg_db: str | None = None) -> Config:
    """A config whose ledger holds ledger_rows(): in SQLite, or in the scratch PostgreSQL
    database `pg_db` (emptied first) when one is given."""
    storage = None
    if pg_db is not None:
        reset(pg_db)
        storage = storage_config(pg_db, tmp_path)
    cfg = make_config(tmp_path, storage=storage)
    write_ledger(cfg)
    return cfg
