"""The audits' state on disk, in `<data_dir>/audit.db` beside the findings, written in the same
transaction as the findings and counts of the batch that changed it, and read back at start: a
conflict (or a reused idempotency key, a second destination record ID) whose two writes straddle a
restart is found like any other.

`tracked`: the write tracker, one row per (flow, record). `latest`: the idempotency keys and
destination record IDs (LatestByKey), one row per key, its parts as a JSON array.

A row's `fields` is compact JSON grouping the fields by the write that set them (one payload sets
most fields of a record at once): `[[time, writer, correlation ID, [field, ...], [hash, ...]], ...]`.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator

import orjson

from syncwatch.audit.tracker import Change, Entry, Single, State

SCHEMA = """
CREATE TABLE IF NOT EXISTS tracked (
    flow TEXT NOT NULL, record TEXT NOT NULL,
    last REAL NOT NULL,  -- the latest write of any field: the order of eviction when read back
    fields BLOB NOT NULL,
    PRIMARY KEY (flow, record)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest (
    map TEXT NOT NULL,  -- keys | record_ids
    key TEXT NOT NULL,
    value TEXT NOT NULL, corr TEXT NOT NULL, time REAL NOT NULL,
    PRIMARY KEY (map, key)
) WITHOUT ROWID;
"""
LatestChange = tuple[str, tuple[str, ...], Entry | None]  # map name, key, its entry now (None: gone)


def encode(fields: dict[str, State], single: Single | None = None) -> tuple[float, bytes]:
    """(the latest write's time, the row's `fields`) of a non-empty record; `single`: the one
    write that set every field, when the tracker knows it (the common case, one group)."""
    if single is not None:
        t, writer, corr = single
        return t, orjson.dumps([[t, writer, corr, list(fields), [st[1] for st in fields.values()]]])
    groups: dict[tuple[float, str, str], tuple[list[str], list[int]]] = {}
    for name, (t, h, writer, corr) in fields.items():
        g = groups.get((t, writer, corr))
        if g is None:
            g = groups[(t, writer, corr)] = ([], [])
        g[0].append(name)
        g[1].append(h)
    blob = orjson.dumps([[t, writer, corr, names, hashes] for (t, writer, corr), (names, hashes) in groups.items()])
    return max(t for t, _, _ in groups), blob


def decode(blob: bytes) -> dict[str, State]:
    fields: dict[str, State] = {}
    for t, writer, corr, names, hashes in orjson.loads(blob):
        writer = sys.intern(writer)
        t = float(t)
        for name, h in zip(names, hashes, strict=True):
            fields[name] = (t, int(h), writer, corr)
    return fields


def save(conn: sqlite3.Connection, changes: list[Change]) -> None:
    """Write the changed records (inside the caller's transaction)."""
    gone = [(flow, record) for flow, record, fields, _ in changes if not fields]
    rows = [(flow, record, *encode(fields, single)) for flow, record, fields, single in changes if fields]
    if gone:
        conn.executemany("DELETE FROM tracked WHERE flow = ? AND record = ?", gone)
    if rows:
        conn.executemany("INSERT OR REPLACE INTO tracked (flow, record, last, fields) VALUES (?, ?, ?, ?)", rows)


def load(conn: sqlite3.Connection) -> Iterator[tuple[str, str, dict[str, State] | None]]:
    """Every tracked record, least recently written first; None for a row that cannot be read
    (the caller counts it and lets the next write of that record replace it)."""
    for flow, record, blob in conn.execute("SELECT flow, record, fields FROM tracked ORDER BY last"):
        try:
            yield flow, record, decode(blob)
        except (orjson.JSONDecodeError, ValueError, TypeError, IndexError):
            yield flow, record, None


def save_latest(conn: sqlite3.Connection, changes: list[LatestChange]) -> None:
    """Write the changed idempotency keys and record IDs (inside the caller's transaction)."""
    gone = [(name, orjson.dumps(key).decode()) for name, key, entry in changes if entry is None]
    rows = [(name, orjson.dumps(key).decode(), *entry) for name, key, entry in changes if entry is not None]
    if gone:
        conn.executemany("DELETE FROM latest WHERE map = ? AND key = ?", gone)
    if rows:
        conn.executemany("INSERT OR REPLACE INTO latest (map, key, value, corr, time) VALUES (?, ?, ?, ?, ?)", rows)


def load_latest(conn: sqlite3.Connection) -> Iterator[tuple[str, tuple[str, ...] | None, str, Entry]]:
    """(map name, key or None when unreadable, the stored key text, entry), oldest first."""
    for name, text, value, corr, t in conn.execute("SELECT map, key, value, corr, time FROM latest ORDER BY time"):
        try:
            parts = orjson.loads(text)
            key = tuple(str(p) for p in parts) if isinstance(parts, list) and parts else None
        except orjson.JSONDecodeError:
            key = None
        yield name, key, text, (str(value), str(corr), float(t))


def drop_latest(conn: sqlite3.Connection, rows: list[tuple[str, str]]) -> None:
    """Delete unreadable rows (map name, stored key text) found by load_latest."""
    with conn:
        conn.executemany("DELETE FROM latest WHERE map = ? AND key = ?", rows)
