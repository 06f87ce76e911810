"""The write tracker's state on disk: one row per (flow, record) in the `tracked` table of
`<data_dir>/audit.db`, beside the findings, written in the same transaction as the findings and
counts of the batch that changed it, and read back at start. A conflict whose two writes straddle a
restart is found like any other.

A row's `fields` is compact JSON grouping the fields by the write that set them (one payload sets
most fields of a record at once): `[[time, writer, correlation ID, [field, ...], [hash, ...]], ...]`.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator

import orjson

from syncwatch.audit.tracker import State

SCHEMA = """
CREATE TABLE IF NOT EXISTS tracked (
    flow TEXT NOT NULL, record TEXT NOT NULL,
    last REAL NOT NULL,  -- the latest write of any field: the order of eviction when read back
    fields BLOB NOT NULL,
    PRIMARY KEY (flow, record)
) WITHOUT ROWID;
"""

Change = tuple[str, str, dict[str, State] | None]  # flow, record, its fields now (None: gone)


def encode(fields: dict[str, State]) -> bytes:
    vals = fields.values()
    t, _, writer, corr = next(iter(vals))
    if all(st[0] == t and st[3] == corr and st[2] == writer for st in vals):
        # The common case: one payload wrote every tracked field of the record.
        return orjson.dumps([[t, writer, corr, list(fields), [st[1] for st in vals]]])
    groups: dict[tuple[float, str, str], tuple[list[str], list[int]]] = {}
    for name, (t, h, writer, corr) in fields.items():
        g = groups.get((t, writer, corr))
        if g is None:
            g = groups[(t, writer, corr)] = ([], [])
        g[0].append(name)
        g[1].append(h)
    return orjson.dumps([[t, writer, corr, names, hashes] for (t, writer, corr), (names, hashes) in groups.items()])


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
    gone = [(flow, record) for flow, record, fields in changes if not fields]
    rows = [
        (flow, record, max(st[0] for st in fields.values()), encode(fields))
        for flow, record, fields in changes
        if fields
    ]
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
