"""The ledger's hot-path statements must be index searches: a scan of closed_tx costs time in
proportion to every transaction ever closed, so intake would slow down for as long as it runs."""

from __future__ import annotations

import sqlite3

import pytest

from exporter import ledger
from exporter.ledger_schema import DDL

TABLES = ("open_tx", "closed_tx", "applies")


def plan(sql: str, n_params: int) -> list[str]:
    conn = sqlite3.connect(":memory:")
    conn.executescript(DDL)
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, ["x"] * n_params)]


@pytest.mark.parametrize("n_keys", [1, 300])
def test_closed_lookup_searches_the_key_index(n_keys):
    steps = plan(ledger.closed_lookup_sql(n_keys), 3 * n_keys)
    assert any("SEARCH c USING INDEX closed_tx_by_key (corr=? AND dest=? AND flow=?)" in s for s in steps), steps
    assert not any(s.startswith("SCAN") and any(t in s for t in TABLES + ("c",)) for s in steps
                   if "CONSTANT ROWS" not in s and s != "SCAN k"), steps


@pytest.mark.parametrize("sql", [
    ledger._CLOSE_STORED,
    ledger._UPSERT_OPEN,
    "SELECT outcome, closed_at, lag, changed_at, close_span, timeline FROM closed_tx WHERE corr=? AND dest=? AND flow=?",
    "DELETE FROM open_tx WHERE corr=? AND dest=? AND flow=?",
    "SELECT first_span, last_span FROM applies WHERE idem=?",
])
def test_per_key_statements_never_scan(sql):
    steps = plan(sql, sql.count("?"))
    assert not any(s.startswith("SCAN") for s in steps), steps


def test_the_old_row_value_in_form_would_scan():
    """Guards the guard: the form the lookup must not use is planned as a scan on this SQLite."""
    steps = plan("SELECT corr, outcome, timeline FROM closed_tx WHERE (corr, dest, flow) IN (VALUES (?,?,?),(?,?,?))", 6)
    assert "SCAN closed_tx" in steps, steps
