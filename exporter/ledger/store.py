"""The storage interface behind the ledger's transitions: what a backend (SQLite here, PostgreSQL in
issue 16) must do, in the ledger's terms. The transitions decide; the store only reads and writes.

A store is used by one thread (the ledger writer). Every write happens between `begin` and `commit`
(or `rollback`); reads inside that window see the writes made in it.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from syncwatch.ledger.records import ClosedRow, ClosedTxRow, OpenRow, OpenTxRow, StoredClose, TxKey


class StoreBusy(Exception):
    """`begin` refused: another process writes the ledger now (on PostgreSQL: this replica's leader
    lease term is over, another replica leads). Nothing changed."""


def is_store_failure(exc: BaseException) -> bool:
    """True when a ledger write failed because of its storage (disk, lock, connection, timeout: a
    retry may succeed, the sender is told 503), False for anything else: a bug in syncwatch, which
    a retry repeats. psycopg is checked only when PostgreSQL loaded it."""
    if isinstance(exc, (StoreBusy, OSError, sqlite3.OperationalError)):
        return True
    if type(exc) is sqlite3.DatabaseError:  # "file is not a database", "disk image is malformed"
        return True
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return False
    # OperationalError: connection lost, server shutting down, statement_timeout, lock timeout,
    # serialization failure, disk full; a read-only transaction: a failover to a standby.
    return isinstance(exc, (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction))


@dataclass
class BatchWrites:
    """The row writes of one batch, gathered by the transitions and written at its end by
    `LedgerStore.write_batch`, in this order (it matters: a close reads the open row it replaces)."""

    closed_deletes: list[TxKey] = field(default_factory=list)  # closed rows a new close replaces
    stored_closes: dict[TxKey, StoredClose] = field(default_factory=dict)  # open rows that close
    open_deletes: list[TxKey] = field(default_factory=list)  # open rows to delete (after stored_closes)
    new_closes: dict[TxKey, ClosedTxRow] = field(default_factory=dict)  # closes never stored as open
    open_upserts: list[OpenTxRow] = field(default_factory=list)  # open rows to insert or update


class LedgerStore(Protocol):
    """Durable rows of open and closed transactions and of applied idempotency keys."""

    # ---- the write transaction -----------------------------------------------------------------
    def begin(self) -> None:
        """Start the write transaction of one batch, taking the write lock; raises when it cannot
        (another writer holds it): nothing has changed then."""

    def commit(self) -> None:
        """Make the batch durable; raises when it could not (the batch is then not written)."""

    def rollback(self) -> None:
        """Undo the batch if it is still open (a failed commit may have undone it already)."""

    # ---- start ---------------------------------------------------------------------------------
    def open_rows(self) -> Iterator[OpenRow]:
        """Every open transaction, to rebuild memory at start or after a failed write."""

    def closed_hashes(self) -> Iterator[int]:
        """schema.corr_hash of every closed transaction's correlation ID (for ClosedKeys)."""

    # ---- closed transactions -------------------------------------------------------------------
    def closed_rows(self, keys: Sequence[TxKey]) -> dict[TxKey, ClosedRow]:
        """The closed rows of these keys, those that exist; for a few hundred keys at a time."""

    def closed_row(self, key: TxKey) -> ClosedRow | None:
        """The closed row of one key, None when there is none."""

    def set_closed_source(
        self,
        key: TxKey,
        lag: float | None,
        changed_at: float,
        source: str | None,
        source_trace: bytes,
        source_span: bytes,
    ) -> None:
        """A source span that arrives after its transaction closed: its change time, lag and span;
        the source only where none is recorded."""

    def add_closed_attempt(self, key: TxKey, timeline: str) -> None:
        """An attempt that arrives after the close: one more attempt and the new timeline."""

    def set_closed_timeline(self, key: TxKey, timeline: str) -> None:
        """Replace a closed transaction's timeline (e.g. with a duplicate apply added)."""

    # ---- applies of idempotency keys -----------------------------------------------------------
    def apply_spans(self, idem: str, dest: str, flow: str) -> tuple[bytes | None, bytes | None] | None:
        """(first span, last span) that applied this key at this destination and flow, None if never."""

    def insert_apply(self, idem: str, key: TxKey, at: float, span: bytes, applies: int) -> None:
        """The first apply of a key seen (`applies` may be 2 when it is known to repeat an earlier one)."""

    def add_apply(self, idem: str, dest: str, flow: str, at: float, span: bytes) -> None:
        """One more apply of a key already recorded, at `at` by `span`."""

    # ---- the batch -----------------------------------------------------------------------------
    def write_batch(self, writes: BatchWrites) -> None:
        """Write a batch's gathered row changes (see BatchWrites for the order)."""

    # ---- housekeeping --------------------------------------------------------------------------
    def sweep(self, cutoff: float) -> None:
        """Forget closed transactions and applies last touched before `cutoff`, a bounded amount per
        call (it runs on the writer thread); outside a batch, and it never raises."""

    def close(self) -> None:
        """Release the store's connection."""
