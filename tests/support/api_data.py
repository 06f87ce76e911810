"""A ledger written with the schema's own DDL (the shape the ledger writer produces) for the query API
and web view tests: one confirmed order with its retries, overdue, pending, failed and duplicate rows."""

from __future__ import annotations

import json
import sqlite3

from snapshot_data import T0

from syncwatch.config.models import Config
from syncwatch.ledger.schema import DDL, STAGE_CONFIRM, STAGE_FAIL, corr_hash

TOKEN = "s3cr3t-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = T0 + 3600
TRACE = "ab" * 16


def span(n: int) -> str:
    return f"{n:016x}"


def build_ledger(path):
    conn = sqlite3.connect(path)
    conn.executescript(DDL)
    # ord-1 -> erp: two 503s, then 201, confirmed; lag 42 s.
    timeline = {
        "attempts": [
            [TRACE, span(1), T0 + 1, T0 + 2, 1, "503", "http_503"],
            [TRACE, span(2), T0 + 4, T0 + 5, 2, "503", "http_503"],
            [TRACE, span(3), T0 + 13, T0 + 14, 3, "201", None],
        ],
        "close": [STAGE_CONFIRM, TRACE, span(4), T0 + 40, T0 + 42, None, "ord-1:erp"],
    }
    conn.execute(
        "INSERT INTO closed_tx (corr, dest, flow, source, outcome, changed_at, opened_at, deadline, closed_at, lag, "
        "source_trace, source_span, attempts, timeline, corr_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            "ord-1",
            "erp",
            "orders",
            "storefront",
            "confirmed",
            T0,
            T0,
            T0 + 300,
            T0 + 42,
            42.0,
            bytes.fromhex(TRACE),
            bytes.fromhex(span(9)),
            3,
            json.dumps(timeline),
            corr_hash("ord-1"),
        ),
    )
    # 25 overdue orders (deadline passed), 3 pending ones, a failed one and an inventory duplicate.
    for i in range(25):
        tl = {"attempts": [[TRACE, span(100 + i), T0 + i, T0 + i + 1, 1, "429", "http_429"]]}
        conn.execute(
            "INSERT INTO open_tx (corr, dest, flow, source, changed_at, opened_at, deadline, attempts, timeline) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            (f"late-{i:02d}", "erp", "orders", "storefront", T0 + i, T0 + i, T0 + 300 + i, 1, json.dumps(tl)),
        )
    for i in range(3):
        conn.execute(
            "INSERT INTO open_tx (corr, dest, flow, source, changed_at, opened_at, deadline, attempts) VALUES (?,?,?,?,?,?,?,0)",
            (f"fresh-{i}", "erp", "orders", "storefront", NOW - 10, NOW - 10, NOW + 290),
        )
    conn.execute(
        "INSERT INTO open_tx (corr, dest, flow, source, changed_at, opened_at, deadline, attempts) VALUES (?,?,?,?,?,?,?,0)",
        ("cust-1", "storefront", "customers", "erp", T0, T0, T0 + 10),
    )
    failed_tl = {
        "attempts": [[TRACE, span(200), T0, T0 + 1, 1, "500", "http_500"]],
        "close": [STAGE_FAIL, TRACE, span(201), T0 + 60, T0 + 60, "retries_exhausted", None],
    }
    conn.execute(
        "INSERT INTO closed_tx (corr, dest, flow, source, outcome, changed_at, closed_at, attempts, timeline, corr_hash) "
        "VALUES (?,?,?,?,?,?,?,?,?,?)",
        ("ord-9", "erp", "orders", "storefront", "failed", T0, T0 + 60, 1, json.dumps(failed_tl), corr_hash("ord-9")),
    )
    dup_tl = {
        "close": [STAGE_CONFIRM, TRACE, span(300), T0 + 5, T0 + 6, None, "adj-7"],
        "duplicates": [[TRACE, span(301), T0 + 20, T0 + 21, "adj-7"]],
    }
    conn.execute(
        "INSERT INTO closed_tx (corr, dest, flow, source, outcome, changed_at, closed_at, lag, attempts, timeline, "
        "corr_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            "inv-7",
            "storefront",
            "inventory",
            "wms",
            "confirmed",
            T0,
            T0 + 6,
            6.0,
            0,
            json.dumps(dup_tl),
            corr_hash("inv-7"),
        ),
    )
    conn.execute(
        "INSERT INTO applies (idem, corr, dest, flow, first_at, last_at, applies) VALUES (?,?,?,?,?,?,?)",
        ("adj-7", "inv-7", "storefront", "inventory", T0 + 6, T0 + 21, 2),
    )
    conn.commit()
    conn.close()


def make_config(tmp_path, token=TOKEN) -> Config:
    return Config.model_validate({"storage": {"data_dir": str(tmp_path / "data")}, "api": {"token": token}})
