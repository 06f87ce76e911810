"""The simulated systems' own databases (SQLite files in the demo's data directory): the storefront's
orders table and the ERP's documents table. syncwatch's `sql` reconciler reads them read-only, the
way it reads a real storefront's and ERP's databases, to find orders that never arrived."""

from __future__ import annotations

import sqlite3
from pathlib import Path

# The queries the demo's `reconcilers:` entry runs (the reconciler wraps them and pages by ID).
SOURCE_QUERY = "SELECT id, changed_at FROM orders WHERE changed_at >= :window_start AND changed_at < :window_end"
DESTINATION_QUERY = (
    "SELECT external_id AS id, document AS record_id, created_at AS arrived_at FROM documents WHERE flow = 'orders'"
)


def _open(path: Path, schema: str) -> sqlite3.Connection:
    # Autocommit, WAL: each insert is one short statement, readable by the reconciler at once.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # a simulator: losing the file on a crash loses nothing
    conn.execute(schema)
    return conn


class StorefrontDb:
    """The storefront's orders: one row per order, with the time it was placed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = _open(path, "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, changed_at REAL NOT NULL)")

    def add_order(self, order_id: str, changed_at: float) -> None:
        self.conn.execute("INSERT INTO orders (id, changed_at) VALUES (?, ?)", (order_id, changed_at))

    def close(self) -> None:
        self.conn.close()


class ErpDb:
    """The ERP's documents: one row per applied request (an applied-twice adjustment has two)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = _open(
            path,
            "CREATE TABLE IF NOT EXISTS documents (document TEXT PRIMARY KEY, external_id TEXT NOT NULL, "
            "flow TEXT NOT NULL, created_at REAL NOT NULL)",
        )

    def add_document(self, document: str, external_id: str, flow: str, created_at: float) -> None:
        self.conn.execute(
            "INSERT INTO documents (document, external_id, flow, created_at) VALUES (?, ?, ?, ?)",
            (document, external_id, flow, created_at),
        )

    def external_ids(self, flow: str) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT external_id FROM documents WHERE flow = ?", (flow,))}

    def close(self) -> None:
        self.conn.close()
