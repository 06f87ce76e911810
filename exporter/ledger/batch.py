"""What one batch has changed and not yet written, and the closed rows it looks up: a batch sees its
own closes before the store does, and the sources of a batch ask for their closed rows all at once.
"""

from __future__ import annotations

from zlib import crc32

from syncwatch.ledger.deadlines import Deadlines
from syncwatch.ledger.flows import UNKNOWN, FlowRules
from syncwatch.ledger.memory import CLOSED_KEYS_MASK, ClosedKeys, Tx
from syncwatch.ledger.records import ClosedRow, Event, OpenTxRow, TxKey
from syncwatch.ledger.schema import corr_hash
from syncwatch.ledger.store import BatchWrites, LedgerStore


class Batch:
    def __init__(self, store: LedgerStore, closed_keys: ClosedKeys):
        self.store = store
        self.closed_keys = closed_keys
        self.reset()

    def reset(self) -> None:
        """A new batch: nothing changed yet."""
        self.prefetched: dict[TxKey, ClosedRow] | None = None  # closed rows looked up for the sources
        self.closed: dict[TxKey, ClosedRow] = {}  # closes of this batch, not yet written
        # Open transactions to write, and their keys: keyed by the object, which hashes and compares
        # by identity, where a key tuple is hashed and compared item by item.
        self.dirty: dict[Tx, TxKey] = {}
        self.writes = BatchWrites()

    def prefetch_for(self, sources: list[Event], pending: dict[TxKey, Tx], flows: FlowRules) -> None:
        """Which of the transactions these source spans would open are already closed (confirm before
        source, or a redelivered source), looked up in a few statements; until `end_prefetch`,
        `closed_row` answers from them (and from this batch's own closes) without asking the store."""
        keys: list[TxKey] = []
        bits = self.closed_keys.bits
        for ev in sources:
            bit = crc32(ev.corr.encode("utf-8", "surrogatepass")) & CLOSED_KEYS_MASK  # schema.corr_hash, inlined
            if not bits[bit >> 3] & (1 << (bit & 7)):  # ClosedKeys.may_contain, inlined: once per source
                continue  # no transaction with this correlation ID ever closed
            for dest in flows.configured_destinations(ev.flow):
                key = (ev.corr, dest, ev.flow)
                if key not in pending:
                    keys.append(key)
            if ev.dest:
                keys.append((ev.corr, ev.dest, ev.flow))
        self.prefetched = self.store.closed_rows(keys) if keys else {}

    def end_prefetch(self) -> None:
        self.prefetched = None

    def closed_row(self, key: TxKey) -> ClosedRow | None:
        """The closed row of a key as this batch sees it, None when it is not closed."""
        closed, prefetched = self.closed, self.prefetched
        if closed:  # (empty while the sources are recorded, the usual case: no hashing of the key)
            row = closed.get(key)
            if row is not None:
                return row  # closed earlier in this batch, not yet written
        if prefetched is not None:
            return prefetched.get(key) if prefetched else None
        if not self.closed_keys.may_contain(corr_hash(key[0])):
            return None  # no transaction with this correlation ID ever closed
        return self.store.closed_row(key)

    def set_closed_timeline(self, key: TxKey, timeline: str) -> None:
        """A closed transaction's new timeline: into its row to write if it closed in this batch,
        else into the store."""
        row = self.closed.get(key)
        if row is None:
            self.store.set_closed_timeline(key, timeline)
            return
        writes = self.writes
        self.closed[key] = row._replace(timeline=timeline)
        new = writes.new_closes.get(key)
        if new is not None:  # timeline: records.CLOSED_TX_COLUMNS[14]
            writes.new_closes[key] = (*new[:14], timeline, new[15])
        stored = writes.stored_closes.get(key)
        if stored is not None:  # timeline: records.STORED_CLOSE_COLUMNS[7]
            writes.stored_closes[key] = (*stored[:7], timeline, *stored[8:])

    def write(self, omitted: dict[TxKey, int], deadlines: Deadlines) -> None:
        """Write the batch: open transactions it changed, its closes; deadlines of what it opened."""
        rows = self.writes.open_upserts
        opened: list[tuple[TxKey, float]] = []
        for tx, key in self.dirty.items():
            if not tx.stored:
                # Opened in this batch (every transaction opened is dirty until it closes) and still
                # open: checked at its deadline. Most open and close within a batch; their entries
                # would only sit in the heap, stale, until their deadline.
                opened.append((key, tx.deadline))
            src = tx.src or (None, None)
            n_omitted = omitted.get(key, 0) if omitted else 0
            source = tx.labels[1] if tx.labels[1] != UNKNOWN else None
            n_attempts = (len(tx.attempts) if tx.attempts else 0) + n_omitted
            row: OpenTxRow = (
                *key, source, tx.changed_at, tx.opened_at, tx.deadline, *src, n_attempts, tx.timeline(None, n_omitted)
            )  # fmt: skip
            rows.append(row)
            tx.stored = True
            tx.src = None  # written; memory need not keep it
        deadlines.schedule_each(opened)
        self.store.write_batch(self.writes)
