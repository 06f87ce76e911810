"""Audit findings, daily write counts and the write tracker's state in `<data_dir>/audit.db`: the
findings carry the redacted values side by side and are swept with the snapshots; the counts (no
values) feed the ownership report for audit.report_retention; the tracked state (audit/state.py)
is written in the same transaction as the findings it led to."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from syncwatch.audit import state
from syncwatch.audit.tracker import Change, Entry, State

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL, flow TEXT NOT NULL, field TEXT, record TEXT,
    writer TEXT, owner TEXT, time REAL NOT NULL, corr TEXT, value TEXT,
    prev_writer TEXT, prev_time REAL, prev_corr TEXT, prev_value TEXT
);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE TABLE IF NOT EXISTS writes (
    day INTEGER NOT NULL, flow TEXT NOT NULL, field TEXT NOT NULL, writer TEXT NOT NULL,
    writes INTEGER NOT NULL DEFAULT 0, conflicts INTEGER NOT NULL DEFAULT 0, violations INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, flow, field, writer)
);
"""
    + state.SCHEMA
)

EVENT_COLUMNS = (
    "kind",
    "flow",
    "field",
    "record",
    "writer",
    "owner",
    "time",
    "corr",
    "value",
    "prev_writer",
    "prev_time",
    "prev_corr",
    "prev_value",
)

Counts = dict[tuple[int, str, str, str], list[int]]  # (day, flow, field, writer) -> writes, conflicts, violations


def db_path(data_dir: Path) -> Path:
    return Path(data_dir) / "audit.db"


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=5, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
    conn.row_factory = sqlite3.Row
    return conn


class AuditStore:
    def __init__(self, path: Path, max_events: int) -> None:
        self.path = path
        self.max_events = max_events
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        if self._conn is None:
            self._conn = connect(self.path)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(
        self,
        events: list[dict[str, Any]],
        counts: Counts,
        changes: list[Change] | None = None,
        latest: list[state.LatestChange] | None = None,
    ) -> None:
        """One batch in one transaction: its findings, its write counts, the tracked records and
        the idempotency keys / record IDs it changed."""
        self.open()
        assert self._conn is not None
        with self._conn:
            if changes:
                state.save(self._conn, changes)
            if latest:
                state.save_latest(self._conn, latest)
            if events:
                cols = ", ".join(EVENT_COLUMNS)
                marks = ", ".join("?" for _ in EVENT_COLUMNS)
                self._conn.executemany(
                    f"INSERT INTO events ({cols}) VALUES ({marks})",  # noqa: S608 -- fixed column names
                    [tuple(e.get(c) for c in EVENT_COLUMNS) for e in events],
                )
                self._conn.execute(
                    "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (self.max_events,)
                )
            if counts:
                self._conn.executemany(
                    "INSERT INTO writes (day, flow, field, writer, writes, conflicts, violations) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, flow, field, writer) DO UPDATE SET "
                    "writes = writes + excluded.writes, conflicts = conflicts + excluded.conflicts, "
                    "violations = violations + excluded.violations",
                    [(*k, *v) for k, v in counts.items()],
                )

    def load_tracked(self) -> list[tuple[str, str, dict[str, State] | None]]:
        """The tracked records persisted by earlier processes, least recently written first."""
        self.open()
        assert self._conn is not None
        return list(state.load(self._conn))

    def load_latest(self) -> list[tuple[str, tuple[str, ...] | None, Entry]]:
        """The idempotency keys and record IDs persisted by earlier processes, oldest first;
        unreadable rows are deleted (key None)."""
        self.open()
        assert self._conn is not None
        rows = list(state.load_latest(self._conn))
        bad = [(name, text) for name, key, text, _ in rows if key is None]
        if bad:
            state.drop_latest(self._conn, bad)
        return [(name, key, entry) for name, key, _, entry in rows]

    def sweep(self, event_cutoff: float, count_cutoff: float) -> int:
        self.open()
        assert self._conn is not None
        with self._conn:
            n = self._conn.execute("DELETE FROM events WHERE time < ?", (event_cutoff,)).rowcount
            self._conn.execute("DELETE FROM writes WHERE day < ?", (int(count_cutoff // 86400),))
        return n


def list_events(path: Path, *, kind: str | None, flow: str | None, since: float, limit: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    conn = connect(path, readonly=True)
    try:
        sql = "SELECT * FROM events WHERE time >= ?"
        args: list[Any] = [since]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        if flow:
            sql += " AND flow = ?"
            args.append(flow)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def report_rows(path: Path, since: float) -> list[dict[str, Any]]:
    """Per flow, field and writer: writes, conflicts and violations since `since` (whole days)."""
    if not path.exists():
        return []
    conn = connect(path, readonly=True)
    try:
        rows = conn.execute(
            "SELECT flow, field, writer, SUM(writes) AS writes, SUM(conflicts) AS conflicts, "
            "SUM(violations) AS violations FROM writes WHERE day >= ? "
            "GROUP BY flow, field, writer ORDER BY flow, field, writer",
            (int(since // 86400),),
        )
        return [dict(r) for r in rows]
    finally:
        conn.close()


def idempotency_rows(path: Path, since: float) -> list[dict[str, Any]]:
    """Key reuse and duplicate records per flow since `since`, from the findings still kept."""
    if not path.exists():
        return []
    conn = connect(path, readonly=True)
    try:
        rows = conn.execute(
            "SELECT flow, kind, COUNT(*) AS n FROM events WHERE time >= ? "
            "AND kind IN ('key_reuse', 'duplicate_record') GROUP BY flow, kind ORDER BY flow, kind",
            (since,),
        )
        return [dict(r) for r in rows]
    finally:
        conn.close()
