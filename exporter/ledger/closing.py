"""How transactions close (confirm, fail, expire) and what happens to a closed one when more of it
arrives: a late source span brings the lag, a late attempt joins the timeline, a second confirm is
a duplicate apply, a redelivered closing span changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from zlib import crc32

import orjson

from syncwatch.ledger.batch import Batch
from syncwatch.ledger.flows import UNKNOWN, FlowRules
from syncwatch.ledger.memory import CLOSED_KEYS_MASK, ClosedKeys, Tx
from syncwatch.ledger.metric_batch import MetricBatch
from syncwatch.ledger.records import (
    Close,
    ClosedRow,
    ClosedTxRow,
    Duplicate,
    Event,
    StoredClose,
    Timeline,
    TxKey,
    TxLabels,
    to_json,
)
from syncwatch.ledger.store import LedgerStore
from syncwatch.ledger.timelines import Timelines

MAX_DUPLICATES = 100  # duplicate applies listed per transaction; more are counted

_new = tuple.__new__  # records without the Python-level NamedTuple __new__ (records.py)


class Closer:
    def __init__(
        self,
        store: LedgerStore,
        pending: dict[TxKey, Tx],
        closed_keys: ClosedKeys,
        batch: Batch,
        timelines: Timelines,
        updates: MetricBatch,
        flows: FlowRules,
        clock: Callable[[], float],
    ):
        self.store, self.pending, self.closed_keys, self.batch = store, pending, closed_keys, batch
        self.timelines, self.updates, self.flows, self.clock = timelines, updates, flows, clock
        self.metrics = updates.metrics
        self._pending = updates.counts(self.metrics.pending)  # added to inline on the hot path
        self._closes = updates.closes

    # ---- closing spans -------------------------------------------------------------------------
    def confirm(self, ev: Event, dest: str) -> None:
        corr, flow = ev.corr, ev.flow
        key = (corr, dest, flow)
        tx = self.pending.get(key)
        row = None if tx is not None else self.batch.closed_row(key)
        if row is not None and row.close_span == ev.span_id:
            return  # redelivery of the very span that closed it
        idem = ev.idem
        if idem is not None:
            duplicate = self._apply(idem, key, ev)
        else:
            # Default key (correlation ID + destination): a confirm of an already confirmed transaction.
            duplicate = row is not None and row.outcome == "confirmed"
            if duplicate:
                self._apply(f"{corr}\x1f{dest}", key, ev, first_count=2)
        if duplicate:
            self._record_duplicate(key, ev, row)
            return
        if row is not None and row.outcome == "confirmed":
            return  # confirmed under another idempotency key: the transaction is already closed
        labels: TxLabels | None = None  # (flow, source or "unknown", dest)
        source: str | None
        if tx is not None:
            changed_at = tx.changed_at if tx.changed_at is not None else ev.changed_at
            if tx.labels[1] != UNKNOWN:
                labels = tx.labels
                source = labels[1]
            else:
                source = ev.source
        else:
            changed_at = ev.changed_at
            if changed_at is None and row is not None:
                changed_at = row.changed_at
            source = ev.source
        lag = None
        if changed_at is not None:
            lag = self.updates.lag(labels or (flow, source or UNKNOWN, dest), ev.end - changed_at)
        self.close(key, tx, "confirmed", ev, changed_at, lag, source, row)

    def fail(self, ev: Event, dest: str) -> None:
        key = (ev.corr, dest, ev.flow)
        tx = self.pending.get(key)
        row = None
        if tx is None:
            row = self.batch.closed_row(key)
            if row is not None:
                return  # already confirmed or failed: a late or redelivered fail changes nothing
            changed_at, source = ev.changed_at, ev.source
        else:
            changed_at, source = tx.changed_at, (tx.labels[1] if tx.labels[1] != UNKNOWN else ev.source)
        self.close(key, tx, "failed", ev, changed_at, None, source, row)

    def _apply(self, idem: str, key: TxKey, ev: Event, first_count: int = 1) -> bool:
        """Count one apply of an idempotency key; True when it had been applied before (a duplicate)."""
        _corr, dest, flow = key
        span = ev.span_id
        spans = self.store.apply_spans(idem, dest, flow)
        if spans is None:
            self.store.insert_apply(idem, key, ev.end, span, first_count)
            return first_count > 1
        if span in spans:
            return False  # a redelivery of a span already counted
        self.store.add_apply(idem, dest, flow, ev.end, span)
        return True

    def _record_duplicate(self, key: TxKey, ev: Event, row: ClosedRow | None) -> None:
        _corr, dest, flow = key
        if self.flows.exactly_once(flow):
            self.updates.inc(self.metrics.duplicate_applies, (flow, dest))
        if row is None:
            row = self.batch.closed_row(key)
        if row is None:
            return
        doc: Timeline = orjson.loads(row.timeline) if row.timeline else {"attempts": []}
        duplicates = doc.setdefault("duplicates", [])
        if len(duplicates) < MAX_DUPLICATES:
            duplicates.append(Duplicate(ev.trace_id.hex(), ev.span_id.hex(), ev.start, ev.end, ev.idem))
        else:
            doc["duplicates_omitted"] = doc.get("duplicates_omitted", 0) + 1
        self.batch.set_closed_timeline(key, to_json(doc))

    # ---- late spans of a closed transaction ----------------------------------------------------
    def late_source(self, key: TxKey, row: ClosedRow, ev: Event, changed_at: float) -> None:
        """A source span after its transaction closed: the lag of a confirm that came first."""
        if row.changed_at is not None:
            return  # already knew its source: a redelivery
        _corr, dest, flow = key
        lag = row.lag
        if row.outcome == "confirmed":
            lag = self.updates.lag((flow, ev.source or UNKNOWN, dest), row.closed_at - changed_at)
        self.store.set_closed_source(key, lag, changed_at, ev.source, ev.trace_id, ev.span_id)
        prefetched = self.batch.prefetched
        if prefetched is not None:
            prefetched[key] = row._replace(lag=lag, changed_at=changed_at)

    def late_attempt(self, key: TxKey, row: ClosedRow, ev: Event, span_hex: str) -> None:
        """An attempt that arrives after its transaction closed (e.g. a retry racing the confirm)."""
        doc: Timeline = orjson.loads(row.timeline) if row.timeline else {"attempts": []}
        n = self.timelines.add_late(doc, ev, span_hex)
        if n is None:
            return
        self.store.add_closed_attempt(key, to_json(doc))
        self.updates.attempt(key[2], key[1], ev.code, n)

    # ---- the close -----------------------------------------------------------------------------
    def close(
        self,
        key: TxKey,
        tx: Tx | None,
        outcome: str,
        ev: Event | None,
        changed_at: float | None,
        lag: float | None,
        source: str | None,
        row: ClosedRow | None = None,
    ) -> None:
        """Close a transaction. `ev` is the closing span (None when it expires)."""
        corr, dest, flow = key
        close: Close | None
        if ev is not None:
            closed_at, close_span = ev.end, ev.span_id
            close = (ev.stage, ev.trace_id.hex(), close_span.hex(), ev.start, closed_at, ev.error, ev.idem)
        else:
            closed_at, close_span, close = self.clock(), None, None
        attempts = 0
        h = crc32(corr.encode("utf-8", "surrogatepass"))  # schema.corr_hash, inlined: once per close
        bit = h & CLOSED_KEYS_MASK  # self.closed_keys.add(h), inlined
        self.closed_keys.bits[bit >> 3] |= 1 << (bit & 7)
        batch = self.batch
        writes = batch.writes
        if key in batch.closed:
            # Closed earlier in this batch (a fail, then its confirm): this close replaces that one.
            writes.new_closes.pop(key, None)
            writes.stored_closes.pop(key, None)
        elif row is not None:
            writes.closed_deletes.append(key)
        timeline: str | None
        if tx is not None:
            del self.pending[key]
            batch.dirty.pop(tx, None)
            attempts, omitted = self.timelines.closing(key, tx)
            labels = tx.labels
            pending = self._pending  # updates.inc, inlined
            n = pending.get(labels)
            if n is None:
                self.updates.new_series(pending, labels, self.metrics.pending, labels)
                n = 0
            pending[labels] = n - 1
            if tx.overdue:
                self.updates.inc(self.metrics.overdue, labels, -1)
            timeline = tx.timeline(close, omitted)
            if tx.stored:
                stored: StoredClose = (
                    source,
                    outcome,
                    changed_at,
                    closed_at,
                    lag,
                    close_span,
                    attempts,
                    timeline,
                    h,
                    *key,
                )
                writes.stored_closes[key] = stored
                writes.open_deletes.append(key)
            else:
                src = tx.src or (None, None)
                new: ClosedTxRow = (
                    *key, source, outcome, changed_at, tx.opened_at, tx.deadline, closed_at, lag, *src,
                    close_span, attempts, timeline, h,
                )  # fmt: skip
                writes.new_closes[key] = new
        else:
            labels = self.flows.labels(flow, source, dest)
            if row is not None and row.timeline:  # e.g. a confirm after a fail: keep the attempts already recorded
                doc: Timeline = orjson.loads(row.timeline)
                attempts = len(doc.get("attempts", ())) + doc.get("omitted", 0)
                doc["close"] = close  # type: ignore[typeddict-item]  # None: an expiry has no closing span
                timeline = to_json(doc)
            else:
                timeline = to_json({"attempts": [], "close": close}) if close else None
            writes.new_closes[key] = (
                *key, source, outcome, changed_at, None, None, closed_at, lag, None, None, close_span, attempts, timeline, h
            )  # fmt: skip
        batch.closed[key] = _new(ClosedRow, (outcome, closed_at, lag, changed_at, close_span, timeline))
        closes = self._closes[outcome]  # the transactions metric's (*labels, outcome), counted per outcome
        n = closes.get(labels)
        if n is None:
            self.updates.new_series(closes, labels, self.metrics.transactions, (*labels, outcome))
            n = 0
        closes[labels] = n + 1
        if attempts:
            self.updates.observe(self.metrics.delivery_attempts, (flow, dest), attempts)
