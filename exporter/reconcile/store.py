"""Findings and window positions in their own SQLite file, `<storage.data_dir>/reconcile.db`: a
restart keeps what was found and where each flow's window stands. A file of its own, not a table
in the ledger: the ledger has one writer thread with group commit that intake depends on, and
reconciliation writes in bursts that must never hold it up.

Called from worker threads (asyncio.to_thread); one connection, guarded by a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncwatch.ledger.read_model import BadCursor, decode_cursor, encode_cursor
from syncwatch.reconcile.base import KINDS

FILE_NAME = "reconcile.db"
MAX_PAGE = 1000
DDL = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS findings(
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    reconciler  TEXT NOT NULL,
    flow        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    source_id   TEXT NOT NULL,
    changed_at  REAL NOT NULL,
    first_seen  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    resolved_at REAL,
    detail      TEXT NOT NULL DEFAULT '{}',
    UNIQUE (reconciler, flow, kind, source_id)
);
CREATE INDEX IF NOT EXISTS findings_open ON findings(reconciler, flow, kind, resolved_at, changed_at);
CREATE TABLE IF NOT EXISTS windows(
    reconciler TEXT NOT NULL,
    flow       TEXT NOT NULL,
    window_end REAL NOT NULL,
    PRIMARY KEY (reconciler, flow)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    source_id: str
    changed_at: float
    detail: dict[str, Any]


def store_path(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


class FindingStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        self._db.executescript(DDL)
        self._db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def window_end(self, reconciler: str, flow: str) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT window_end FROM windows WHERE reconciler = ? AND flow = ?", (reconciler, flow)
            ).fetchone()
        return None if row is None else float(row[0])

    def set_window_end(self, reconciler: str, flow: str, end: float) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO windows(reconciler, flow, window_end) VALUES (?, ?, ?) "
                "ON CONFLICT(reconciler, flow) DO UPDATE SET window_end = excluded.window_end",
                (reconciler, flow, end),
            )

    def apply(
        self,
        reconciler: str,
        flow: str,
        now: float,
        found: list[Finding],
        cleared: Iterable[tuple[str, str]],
        max_open: int,
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Record findings (new or seen again) and resolve the (kind, source ID) pairs that no longer
        hold. Returns (new findings by kind, findings dropped at max_open by kind)."""
        new: dict[str, int] = dict.fromkeys(KINDS, 0)
        dropped: dict[str, int] = dict.fromkeys(KINDS, 0)
        cleared = list(cleared)
        ids = sorted({sid for _, sid in cleared} | {f.source_id for f in found})
        with self._lock, self._db:
            db = self._db
            # One read of what is already recorded for these IDs, then bulk writes by row ID: a page
            # costs a handful of statements, not one per ID.
            existing: dict[tuple[str, str], tuple[int, float | None]] = {}
            marks = ",".join("?" * len(KINDS))
            for i in range(0, len(ids), 5000):
                rows = db.execute(
                    f"SELECT kind, source_id, id, resolved_at FROM findings WHERE reconciler = ? AND flow = ? "
                    f"AND kind IN ({marks}) AND source_id IN (SELECT value FROM json_each(?))",
                    (reconciler, flow, *KINDS, json.dumps(ids[i : i + 5000])),
                ).fetchall()
                existing.update({(r[0], r[1]): (int(r[2]), r[3]) for r in rows})
            resolve = [(now, existing[key][0]) for key in cleared if key in existing and existing[key][1] is None]
            db.executemany("UPDATE findings SET resolved_at = ? WHERE id = ?", resolve)
            open_counts: dict[str, int] = {kind: self._open_count(reconciler, flow, kind) for kind in KINDS}
            seen_again: list[tuple[Any, ...]] = []
            inserts: list[tuple[Any, ...]] = []
            for f in found:
                detail = json.dumps(f.detail, separators=(",", ":"), sort_keys=True)
                row = existing.get((f.kind, f.source_id))
                if row is not None:
                    if row[0] >= 0:
                        seen_again.append((now, detail, f.changed_at, row[0]))
                        if row[1] is not None:
                            open_counts[f.kind] += 1
                    continue
                if open_counts[f.kind] >= max_open:
                    dropped[f.kind] += 1
                    continue
                existing[(f.kind, f.source_id)] = (-1, None)  # a repeat within the page is not new again
                inserts.append((reconciler, flow, f.kind, f.source_id, f.changed_at, now, now, detail))
                open_counts[f.kind] += 1
                new[f.kind] += 1
            db.executemany(
                "UPDATE findings SET last_seen = ?, detail = ?, changed_at = ?, resolved_at = NULL WHERE id = ?",
                seen_again,
            )
            db.executemany(
                "INSERT INTO findings(reconciler, flow, kind, source_id, changed_at, first_seen, last_seen, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                inserts,
            )
        return new, dropped

    def _open_count(self, reconciler: str, flow: str, kind: str) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM findings WHERE reconciler = ? AND flow = ? AND kind = ? AND resolved_at IS NULL",
            (reconciler, flow, kind),
        ).fetchone()
        return int(row[0])

    def open_counts(self, reconciler: str, flow: str) -> dict[str, int]:
        with self._lock:
            return {kind: self._open_count(reconciler, flow, kind) for kind in KINDS}

    def open_before(
        self, reconciler: str, flow: str, kinds: tuple[str, ...], before: float, after_id: int, limit: int
    ) -> list[tuple[int, str, float]]:
        """Open findings of these kinds whose source change is older than `before` (out of the window):
        (finding id, source ID, changed_at), by finding id, for the recheck."""
        marks = ",".join("?" * len(kinds))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, source_id, changed_at FROM findings WHERE reconciler = ? AND flow = ? "
                f"AND kind IN ({marks}) AND resolved_at IS NULL AND changed_at < ? AND id > ? ORDER BY id LIMIT ?",
                (reconciler, flow, *kinds, before, after_id, limit),
            ).fetchall()
        return [(int(r[0]), str(r[1]), float(r[2])) for r in rows]

    def sweep(self, older_than: float) -> int:
        """Delete findings resolved, or last seen, before `older_than`."""
        with self._lock, self._db:
            cur = self._db.execute(
                "DELETE FROM findings WHERE (resolved_at IS NOT NULL AND resolved_at < ?) OR last_seen < ?",
                (older_than, older_than),
            )
            return cur.rowcount


def list_findings(
    path: Path,
    *,
    kind: str | None = None,
    flow: str | None = None,
    reconciler: str | None = None,
    state: str = "open",
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of findings, newest first, for the API (read-only connection of its own)."""
    limit = max(1, min(MAX_PAGE, limit))
    after = decode_cursor(cursor, 2) if cursor else None
    if after is not None and not isinstance(after[0], int):
        raise BadCursor("cursor is not one this API returned")
    if not Path(path).exists():
        return [], None
    where: list[str] = []
    params: list[Any] = []
    for col, value in (("kind", kind), ("flow", flow), ("reconciler", reconciler)):
        if value:
            where.append(f"{col} = ?")
            params.append(value)
    if state == "open":
        where.append("resolved_at IS NULL")
    elif state == "resolved":
        where.append("resolved_at IS NOT NULL")
    if after is not None:
        where.append("id < ?")
        params.append(after[0])
    sql = "SELECT * FROM findings" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
    params.append(limit + 1)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(sql, params).fetchall()
    finally:
        conn.close()
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for r in rows:
        try:
            detail = json.loads(r["detail"])
        except ValueError:
            detail = {}
        items.append(
            {
                "id": r["id"],
                "reconciler": r["reconciler"],
                "flow": r["flow"],
                "kind": r["kind"],
                "source_id": r["source_id"],
                "changed_at": r["changed_at"],
                "first_seen": r["first_seen"],
                "last_seen": r["last_seen"],
                "resolved_at": r["resolved_at"],
                **{k: v for k, v in detail.items() if k in ("record_ids", "arrived_at", "lag_seconds", "ledger_state")},
            }
        )
    next_cursor = encode_cursor([rows[-1]["id"], ""]) if more and rows else None
    return items, next_cursor
