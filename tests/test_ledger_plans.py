"""The ledger's hot-path statements must be index searches: a scan of closed_tx costs time in
proportion to every transaction ever closed, so intake would slow down for as long as it runs."""

from __future__ import annotations

import sqlite3

import pytest

from syncwatch.ledger import sqlite_store as ledger
from syncwatch.ledger.schema import DDL, corr_hash


def plan(sql: str, n_params: int) -> list[str]:
    conn = sqlite3.connect(":memory:")
    conn.executescript(DDL)
    conn.create_function("corr_hash_of", 1, corr_hash, deterministic=True)
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, ["x"] * n_params)]


@pytest.mark.parametrize("n_keys", [1, 300])
def test_closed_lookup_searches_the_hash_index(n_keys):
    steps = plan(ledger.closed_lookup_sql(n_keys), 4 * n_keys)
    assert any("SEARCH c USING INDEX closed_tx_by_hash (corr_hash=?)" in s for s in steps), steps
    assert not any(s.startswith("SCAN") for s in steps if "CONSTANT ROW" not in s and s != "SCAN k"), steps


@pytest.mark.parametrize(
    "sql",
    [
        ledger._CLOSE_STORED,
        ledger._UPSERT_OPEN.one,
        ledger._UPSERT_OPEN.many,
        "SELECT outcome, closed_at, lag, changed_at, close_span, timeline FROM closed_tx WHERE " + ledger._CLOSED_KEY,
        "UPDATE closed_tx SET timeline=? WHERE " + ledger._CLOSED_KEY,
        "DELETE FROM closed_tx WHERE " + ledger._CLOSED_KEY,
        "DELETE FROM open_tx WHERE corr=? AND dest=? AND flow=?",
        "SELECT first_span, last_span FROM applies WHERE idem=? AND dest=? AND flow=?",
        # the query API: one correlation ID, duplicates with their source, failed/expired lists
        "SELECT * FROM closed_tx WHERE corr_hash = ? AND corr = ?",
        "SELECT t.*, (SELECT source FROM closed_tx c WHERE c.corr_hash = corr_hash_of(t.corr) AND c.corr = t.corr "
        "AND c.dest = t.dest AND c.flow = t.flow) AS source FROM applies t WHERE t.applies > 1 ORDER BY t.last_at DESC LIMIT ?",
        "SELECT t.* FROM closed_tx t WHERE t.outcome = ? AND t.outcome <> 'confirmed' ORDER BY t.closed_at DESC LIMIT ?",
    ],
)
def test_statements_never_scan_a_table(sql):
    steps = plan(sql, sql.count("?"))
    tables = [s for s in steps if "CONSTANT ROWS" not in s]  # a multi-row VALUES list is scanned, no table
    assert not any(s.startswith("SCAN") and "USING" not in s for s in tables), steps


def test_the_sweep_looks_at_a_bounded_number_of_rows():
    steps = plan(f"SELECT rowid, closed_at FROM closed_tx ORDER BY rowid LIMIT {ledger.SWEEP_BATCH}", 0)
    assert steps == ["SCAN closed_tx"]  # in rowid order, stopped by the LIMIT: no sort, no index needed


def test_the_old_row_value_in_form_would_scan():
    """Guards the guard: the form the lookup must not use is planned as a scan on this SQLite."""
    steps = plan(
        "SELECT corr, outcome, timeline FROM closed_tx WHERE (corr, dest, flow) IN (VALUES (?,?,?),(?,?,?))", 6
    )
    assert "SCAN closed_tx" in steps, steps
