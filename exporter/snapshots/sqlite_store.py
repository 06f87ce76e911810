"""Embedded snapshot store: one SQLite file (WAL) beside the ledger, `<data_dir>/snapshots.db`.

Used from a single writer thread (the intake's executor). A write returns after its transaction
committed; with WAL and synchronous=NORMAL a committed transaction survives `kill -9`.
Retention deletes go through the same thread in small batches, so a sweep of millions of rows
delays an intake write by one batch at most.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from syncwatch.snapshots.store import (
    STORE_ERROR,
    STORE_FULL,
    STORE_UNAVAILABLE,
    Codec,
    Refused,
    Snapshot,
    StoreError,
    StoreStats,
)

DDL = """
CREATE TABLE IF NOT EXISTS snapshots(
    id           INTEGER PRIMARY KEY,
    corr         TEXT NOT NULL,
    direction    TEXT NOT NULL,
    received     REAL NOT NULL,
    time         REAL NOT NULL,
    trace_id     BLOB,
    span_id      BLOB,
    flow         TEXT,
    dest         TEXT,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    sha256       BLOB NOT NULL,
    truncated    INTEGER NOT NULL,
    redactions   INTEGER NOT NULL,
    dict_id      INTEGER NOT NULL,
    body         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_by_corr ON snapshots(corr);
CREATE INDEX IF NOT EXISTS snapshots_by_received ON snapshots(received);
-- zstd dictionaries; never deleted (small, and old rows may still need them).
CREATE TABLE IF NOT EXISTS zstd_dicts(id INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""
# Rows written before the body hash was keyed hold an unkeyed SHA-256 in `sha256`: they keep 0
# here (adding a column with a default rewrites no row) and their hash is never read back.
_KEYED_COLUMN = "ALTER TABLE snapshots ADD COLUMN hash_keyed INTEGER NOT NULL DEFAULT 0"

_COLUMNS = "id, corr, direction, received, time, trace_id, span_id, flow, dest, content_type, size, sha256, truncated, redactions, dict_id, body, hash_keyed"


class SqliteSnapshotStore:
    name = "sqlite"

    def __init__(self, path: Path, *, max_bytes: int | None = None, train_dictionary: bool = True):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._conn: sqlite3.Connection | None = None
        self._page_size = 4096
        self.codec = Codec(self._save_dict, train=train_dictionary)

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5)
            # auto_vacuum must be set before the first table exists; it lets sweeps give pages back.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(DDL)
            if "hash_keyed" not in {row[1] for row in conn.execute("PRAGMA table_info(snapshots)")}:
                conn.execute(_KEYED_COLUMN)
            self._page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            if self.max_bytes:
                conn.execute(f"PRAGMA max_page_count={max(16, self.max_bytes // self._page_size)}")
            for dict_id, data in conn.execute("SELECT id, data FROM zstd_dicts ORDER BY id"):
                self.codec.load(dict_id, data)
        except sqlite3.Error as exc:
            raise _store_error(exc, f"cannot open snapshot store {self.path}") from None
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writes --------------------------------------------------------------------------------
    def put_many(self, snaps: list[Snapshot]) -> list[Refused]:
        """Store all or none (raises StoreError); no item is refused on its own here."""
        conn = self._connection()
        for s in snaps:
            if not s.blob and s.body:
                self.codec.compress(s)
        rows = [
            (
                s.corr,
                s.direction,
                s.received,
                s.time,
                s.trace_id,
                s.span_id,
                s.flow,
                s.destination,
                s.content_type,
                s.size,
                s.sha256,
                int(s.truncated),
                s.redactions,
                s.dict_id,
                s.blob,
                1,
            )
            for s in snaps
        ]
        try:
            conn.execute("BEGIN")
            try:
                conn.executemany(
                    "INSERT INTO snapshots(corr, direction, received, time, trace_id, span_id, flow, dest, content_type, size, sha256, truncated, redactions, dict_id, body, hash_keyed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _store_error(exc, "cannot store snapshots") from None
        return []

    def _save_dict(self, dict_id: int, data: bytes) -> None:
        self._connection().execute("INSERT OR REPLACE INTO zstd_dicts(id, data) VALUES (?, ?)", (dict_id, data))

    # -- reads ---------------------------------------------------------------------------------
    def find(self, corr: str) -> list[Snapshot]:
        # Own short-lived connection: reads may come from another thread than the writer's.
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
            try:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM snapshots WHERE corr = ? ORDER BY time, id", (corr,)
                ).fetchall()
                for dict_id, data in conn.execute("SELECT id, data FROM zstd_dicts"):
                    if not self.codec.knows(dict_id):
                        self.codec.load(dict_id, data)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise _store_error(exc, "cannot read snapshots") from None
        out = []
        for (
            id_,
            corr_,
            direction,
            received,
            time_,
            trace_id,
            span_id,
            flow,
            dest,
            ctype,
            size,
            sha,
            trunc,
            nred,
            dict_id,
            blob,
            keyed,
        ) in rows:
            out.append(
                Snapshot(
                    corr=corr_,
                    direction=direction,
                    received=received,
                    time=time_,
                    trace_id=trace_id or b"",
                    span_id=span_id or b"",
                    flow=flow,
                    destination=dest,
                    content_type=ctype,
                    size=size,
                    sha256=sha if keyed else b"",
                    truncated=bool(trunc),
                    redactions=nred,
                    body=self.codec.decompress(dict_id, blob),
                    id=id_,
                    stored_bytes=len(blob),
                    dict_id=dict_id,
                )
            )
        return out

    # -- retention -----------------------------------------------------------------------------
    def sweep(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` snapshots received before `cutoff`; returns how many."""
        conn = self._connection()
        try:
            cur = conn.execute(
                "DELETE FROM snapshots WHERE id IN (SELECT id FROM snapshots WHERE received < ? ORDER BY received LIMIT ?)",
                (cutoff, limit),
            )
            return cur.rowcount
        except sqlite3.Error as exc:
            raise _store_error(exc, "cannot delete expired snapshots") from None

    def compact(self, pages: int) -> int:
        """Give up to `pages` free pages back to the file system; returns the free pages left."""
        conn = self._connection()
        try:
            # executescript steps the pragma to completion; execute() would free one page per call.
            conn.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
            return conn.execute("PRAGMA freelist_count").fetchone()[0]
        except sqlite3.Error as exc:
            raise _store_error(exc, "cannot compact the snapshot store") from None

    def stats(self) -> StoreStats:
        conn = self._connection()
        try:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            oldest = conn.execute("SELECT MIN(received) FROM snapshots").fetchone()[0]
        except sqlite3.Error as exc:
            raise _store_error(exc, "cannot read snapshot store statistics") from None
        return StoreStats(
            bytes=(pages - free) * self._page_size, oldest_received=oldest, dictionary_id=self.codec.current_id
        )

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(STORE_UNAVAILABLE, "snapshot store is not open")
        return self._conn


def _store_error(exc: sqlite3.Error, what: str) -> StoreError:
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    if code == sqlite3.SQLITE_FULL or "full" in text:
        return StoreError(STORE_FULL, f"{what}: disk or size limit full ({text})")
    if code in (
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    ):
        return StoreError(STORE_UNAVAILABLE, f"{what}: {text}")
    return StoreError(STORE_ERROR, f"{what}: {text}")
