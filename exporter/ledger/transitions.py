"""The correlation ledger: transactions per (correlation ID, destination, flow), their attempts,
confirmation, outcome and deadline; durable in a store (store.LedgerStore, SQLite by default),
mirrored in memory for the hot path (memory.py).

Only the writer thread (syncwatch.intake.writer) calls `record` and `tick`; both run inside one store
transaction each, and the in-memory state mirrors what that transaction writes. Metric updates wait
for the commit (metric_batch.py); deadlines live in a heap (deadlines.py).

Ledger is ~330 lines, over the ~250 a class should have: it is the state machine of a transaction
(open, attempt, confirm, fail, expire, and each of them arriving late, twice or out of order), and
its cases read best side by side; storage, metrics and deadlines are already elsewhere.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson

from syncwatch.config.models import Config
from syncwatch.ledger.deadlines import Deadlines
from syncwatch.ledger.memory import INDEX_ATTEMPTS, AttemptIndex, ClosedKeys, Tx
from syncwatch.ledger.metric_batch import MetricBatch
from syncwatch.ledger.records import (
    Attempt,
    Close,
    ClosedRow,
    ClosedTxRow,
    Duplicate,
    Event,
    OpenTxRow,
    StoredClose,
    Timeline,
    TxKey,
    TxLabels,
    attempts_of,
    to_json,
)
from syncwatch.ledger.schema import STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_SOURCE, corr_hash
from syncwatch.ledger.sqlite_store import SqliteStore
from syncwatch.ledger.store import BatchWrites, LedgerStore
from syncwatch.metrics.registry import Metrics

log = logging.getLogger("syncwatch.ledger")

TIMELINE_HEAD = 10  # attempts kept from the start of a capped timeline; the rest are the latest ones
MAX_DUPLICATES = 100  # duplicate applies listed per transaction; more are counted
UNKNOWN = "unknown"
MAX_SHARED_LABELS = 100_000  # distinct (flow, source, destination) tuples shared between transactions

_new = tuple.__new__  # builds a record without the Python-level NamedTuple __new__ (records.py)


class Ledger:
    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        store: LedgerStore | None = None,
    ):
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.flows = config.flows
        self.unknown_deadline = config.correlation.unknown_flow_deadline
        self.store: LedgerStore = SqliteStore(config) if store is None else store
        self.pending: dict[TxKey, Tx] = {}
        self.closed_keys = ClosedKeys()
        self.deadlines = Deadlines(config.storage.expire_after, clock)
        self.batch = MetricBatch(config, metrics)
        self._deltas = self.batch.deltas  # added to inline on the hot path
        self._labels: dict[TxLabels, TxLabels] = {}
        self._dests: dict[tuple[str, str | None], tuple[str, ...]] = {}
        self.max_attempts = config.limits.max_timeline_attempts
        self._omitted: dict[TxKey, int] = {}  # key -> attempts dropped from the middle of its timeline
        self._index: dict[TxKey, AttemptIndex] = {}  # key -> index of a transaction with many attempts
        self._stale = False  # memory may be ahead of the store: rebuild before the next write
        self._new_batch()
        for name, flow in self.flows.items():
            metrics.flow_deadline.labels(name).set(flow.deadline)

    @property
    def conn(self) -> sqlite3.Connection:
        """The SQLite connection (for tests and tools; the transitions go through the store)."""
        store = self.store
        if not isinstance(store, SqliteStore):
            raise AttributeError("conn: this ledger's store is not SQLite")
        return store.conn

    @property
    def _heap(self) -> list[Any]:
        return self.deadlines.heap

    # ---- helpers -----------------------------------------------------------------------------
    def _deadline_of(self, flow: str) -> float:
        cfg = self.flows.get(flow)
        return cfg.deadline if cfg is not None else self.unknown_deadline

    def _exactly_once(self, flow: str) -> bool:
        cfg = self.flows.get(flow)
        return cfg.exactly_once if cfg is not None else True

    def _destinations(self, flow: str, source: str | None) -> tuple[str, ...]:
        """The configured destinations a source span of `flow` from `source` opens transactions for."""
        dests = self._dests.get((flow, source))
        if dests is None:
            cfg = self.flows.get(flow)
            dests = self._dests[(flow, source)] = tuple(d for d in (cfg.destinations if cfg else ()) if d != source)
        return dests

    def _label_tuple(self, flow: str, source: str | None, dest: str) -> TxLabels:
        """(flow, source, destination) of a transaction, one shared tuple per distinct value. These
        are the span's values; metric labels are folded from them (MetricBatch.metric_labels)."""
        key = (flow, source or UNKNOWN, dest)
        labels = self._labels.get(key)
        if labels is None:
            labels = key
            if len(self._labels) < MAX_SHARED_LABELS:
                self._labels[key] = key
        return labels

    def _new_batch(self) -> None:
        self._closed_cache: dict[TxKey, ClosedRow] | None = None  # prefetched closed rows, while sources run
        self._batch_closed: dict[TxKey, ClosedRow] = {}  # closes of this batch, not yet written
        self._dirty: dict[TxKey, Tx] = {}  # open transactions to write
        self._writes = BatchWrites()
        self._opened: list[TxKey] = []  # keys opened in this batch

    # ---- startup -----------------------------------------------------------------------------
    def load(self) -> int:
        """Rebuild the in-memory mirror of open transactions from the store (after a restart)."""
        pending = self.pending
        counts: dict[TxLabels, int] = defaultdict(int)
        intern = sys.intern
        loads = orjson.loads
        due: list[tuple[TxKey, float]] = []
        for corr, dest, flow, source, changed_at, opened_at, deadline, timeline in self.store.open_rows():
            dest, flow = intern(dest), intern(flow)
            labels = self._label_tuple(flow, intern(source) if source else None, dest)
            key = (corr, dest, flow)
            attempts = None
            if timeline:
                doc = loads(timeline)
                attempts = attempts_of(doc["attempts"]) or None
                if "omitted" in doc:
                    self._omitted[key] = doc["omitted"]
            pending[key] = Tx(labels, changed_at, opened_at, deadline, attempts, True)
            due.append((key, deadline))
            counts[labels] += 1
        self.deadlines.schedule_all(due)
        for labels, n in counts.items():
            self.batch.child(self.metrics.pending, *labels).set(n)
        add = self.closed_keys.add
        for h in self.store.closed_hashes():
            add(h)
        return len(pending)

    # ---- writes ------------------------------------------------------------------------------
    def record(self, events: list[Event]) -> None:
        """Record a batch of stage-span events in one store transaction. Raises when it could not
        commit; memory then still describes exactly what is committed."""
        if self._stale:
            self._reset_memory()
        self.store.begin()
        try:
            self._new_batch()
            # Sources open transactions, attempts (in time order) update them, confirms and fails close them.
            sources: list[Event] = []
            attempts: list[Event] = []
            closes: list[Event] = []
            for ev in events:
                stage = ev.stage
                (sources if stage == STAGE_SOURCE else attempts if stage == STAGE_ATTEMPT else closes).append(ev)
            if sources:
                self._prefetch_closed(sources)
            for ev in sources:
                self._on_source(ev)
            self._closed_cache = None
            if len(attempts) > 1:
                attempts.sort(key=_start_time)
            for ev in attempts:
                self._on_attempt(ev)
            for ev in closes:
                if ev.stage == STAGE_CONFIRM:
                    self._on_confirm(ev)
                else:
                    self._on_fail(ev)
            self._flush()
            self.store.commit()
        except BaseException:
            self._rollback()
            raise
        self.batch.apply()

    def _open(
        self,
        key: TxKey,
        labels: TxLabels,
        changed_at: float | None,
        now: float,
        flow: str,
        src: tuple[bytes, bytes] | None = None,
    ) -> Tx:
        base = changed_at if changed_at is not None else now
        tx = Tx(labels, changed_at, now, base + self._deadline_of(flow), src=src)
        self.pending[key] = tx
        self._opened.append(key)  # its deadline goes on the heap at flush, if it is still open then
        deltas, delta = self._deltas, (self.metrics.pending, labels)  # batch.inc, inlined on the hot path
        deltas[delta] = deltas.get(delta, 0) + 1
        return tx

    def _prefetch_closed(self, sources: list[Event]) -> None:
        """Look up, in a few statements, which of the transactions these sources would open are
        already closed (confirm before source, or a redelivered source)."""
        keys: list[TxKey] = []
        pending = self.pending
        may_be_closed = self.closed_keys.may_contain
        for ev in sources:
            if not may_be_closed(corr_hash(ev.corr)):
                continue  # no transaction with this correlation ID ever closed
            cfg = self.flows.get(ev.flow)
            for dest in cfg.destinations if cfg else ():
                key = (ev.corr, dest, ev.flow)
                if key not in pending:
                    keys.append(key)
            if ev.dest:
                keys.append((ev.corr, ev.dest, ev.flow))
        self._closed_cache = self.store.closed_rows(keys) if keys else {}

    def _closed_row(self, key: TxKey) -> ClosedRow | None:
        row = self._batch_closed.get(key)
        if row is not None:
            return row  # closed earlier in this batch, not yet written
        cache = self._closed_cache
        if cache is not None:
            return cache.get(key)
        if not self.closed_keys.may_contain(corr_hash(key[0])):
            return None
        return self.store.closed_row(key)

    def _on_source(self, ev: Event) -> None:
        corr, flow, source = ev.corr, ev.flow, ev.source
        changed_at: float = ev.changed_at  # type: ignore[assignment]  # extraction sets it on a source span
        dests = self._destinations(flow, source)
        if ev.dest and ev.dest not in dests:
            dests = (*dests, ev.dest)
        for dest in dests:
            key = (corr, dest, flow)
            tx = self.pending.get(key)
            if tx is not None:
                # Opened earlier by an attempt (or a redelivery of this source): keep the earliest change time.
                if tx.changed_at is None or changed_at < tx.changed_at:
                    tx.changed_at = changed_at
                    tx.src = (ev.trace_id, ev.span_id)
                    if source and tx.labels[1] == UNKNOWN:
                        self._relabel(tx, self._label_tuple(flow, source, dest))
                    if self.deadlines.moved(tx, key, changed_at + self._deadline_of(flow)):
                        self.batch.inc(self.metrics.overdue, tx.labels, -1)
                    self._dirty[key] = tx
                continue
            row = self._closed_row(key)
            if row is not None:
                if row.changed_at is not None:
                    continue  # already knew its source: a redelivery
                lag = row.lag
                if row.outcome == "confirmed":
                    # The confirm arrived first; the lag is known only now.
                    lag = self._observe_lag(flow, source, dest, row.closed_at - changed_at)
                self.store.set_closed_source(key, lag, changed_at, source, ev.trace_id, ev.span_id)
                if self._closed_cache is not None:
                    self._closed_cache[key] = row._replace(lag=lag, changed_at=changed_at)
                continue
            self._dirty[key] = self._open(
                key, self._label_tuple(flow, source, dest), changed_at, ev.received, flow, (ev.trace_id, ev.span_id)
            )

    def _on_attempt(self, ev: Event) -> None:
        flow, dest = ev.flow, _dest(ev)
        key = (ev.corr, dest, flow)
        span_hex = ev.span_id.hex()
        tx = self.pending.get(key)
        if tx is None:
            row = self._closed_row(key)
            if row is not None:
                self._late_attempt(ev, key, span_hex, row)
                return
            # Attempt before its source span: open now, deadline provisional until the source arrives.
            tx = self._open(key, self._label_tuple(flow, ev.source, dest), ev.changed_at, ev.start, flow)
        attempts = tx.attempts
        index = None
        if attempts is None:
            attempts = tx.attempts = []
        elif len(attempts) <= INDEX_ATTEMPTS:
            for a in attempts:
                if a.span_id == span_hex:
                    return  # the same span delivered again
        else:
            index = self._index.get(key)
            if index is None:
                index = self._index[key] = AttemptIndex(attempts)
            if span_hex in index.spans:
                return
        n = ev.attempt
        if n is None:
            n = (index.max_n if index is not None else max([a.n for a in attempts])) + 1 if attempts else 1
        if n > 1:
            if index is not None:
                prev_end = index.end_of.get(n - 1)
            else:
                prev_end = next((a.end for a in reversed(attempts) if a.n == n - 1), None)
            if prev_end is not None:
                self.batch.backoff(flow, dest, n, ev.start - prev_end)
        entry: Attempt = _new(Attempt, (ev.trace_id.hex(), span_hex, ev.start, ev.end, n, ev.code, ev.error))
        attempts.append(entry)
        if index is not None:
            index.add(entry)
        if len(attempts) > self.max_attempts:
            # A retry storm on one transaction: keep the first attempts and the latest, count the rest.
            dropped = attempts.pop(TIMELINE_HEAD)
            if index is not None:
                index.spans.discard(dropped.span_id)
            self._omitted[key] = self._omitted.get(key, 0) + 1
        self._dirty[key] = tx
        self._count_attempt(flow, dest, ev.code, n)

    def _late_attempt(self, ev: Event, key: TxKey, span_hex: str, row: ClosedRow) -> None:
        """An attempt that arrives after its transaction closed (e.g. a retry racing the confirm)."""
        doc: Timeline = orjson.loads(row.timeline) if row.timeline else {"attempts": []}
        attempts = doc["attempts"] = attempts_of(doc.get("attempts", []))
        if any(a.span_id == span_hex for a in attempts):
            return
        n = ev.attempt or max((a.n for a in attempts), default=0) + 1
        attempts.append(Attempt(ev.trace_id.hex(), span_hex, ev.start, ev.end, n, ev.code, ev.error))
        if len(attempts) > self.max_attempts:
            attempts.pop(TIMELINE_HEAD)
            doc["omitted"] = doc.get("omitted", 0) + 1
        self.store.add_closed_attempt(key, to_json(doc))
        self._count_attempt(key[2], key[1], ev.code, n)

    def _count_attempt(self, flow: str, dest: str, code: str | None, n: int) -> None:
        deltas, delta = self._deltas, (self.metrics.attempts, (flow, dest, code))  # batch.inc, inlined
        deltas[delta] = deltas.get(delta, 0) + 1
        if n > 1:
            self.batch.inc(self.metrics.retries, (flow, dest))

    def _on_confirm(self, ev: Event) -> None:
        corr, flow, dest = ev.corr, ev.flow, _dest(ev)
        key = (corr, dest, flow)
        tx = self.pending.get(key)
        row = None if tx is not None else self._closed_row(key)
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
        if tx is not None:
            changed_at = tx.changed_at if tx.changed_at is not None else ev.changed_at
            source = tx.labels[1] if tx.labels[1] != UNKNOWN else ev.source
        else:
            changed_at = ev.changed_at
            if changed_at is None and row is not None:
                changed_at = row.changed_at
            source = ev.source
        lag = None
        if changed_at is not None:
            lag = self._observe_lag(flow, source, dest, ev.end - changed_at)
        self._close(key, tx, "confirmed", ev, changed_at, lag, source, row)

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
        if self._exactly_once(flow):
            self.batch.inc(self.metrics.duplicate_applies, (flow, dest))
        entry = Duplicate(ev.trace_id.hex(), ev.span_id.hex(), ev.start, ev.end, ev.idem)
        if row is None:
            row = self._closed_row(key)
        if row is None:
            return
        doc: Timeline = orjson.loads(row.timeline) if row.timeline else {"attempts": []}
        duplicates = doc.setdefault("duplicates", [])
        if len(duplicates) < MAX_DUPLICATES:
            duplicates.append(entry)
        else:
            doc["duplicates_omitted"] = doc.get("duplicates_omitted", 0) + 1
        timeline = to_json(doc)
        batch_row = self._batch_closed.get(key)
        if batch_row is not None:
            # Closed earlier in this batch and not written yet: the duplicate goes into the row to write.
            writes = self._writes
            self._batch_closed[key] = batch_row._replace(timeline=timeline)
            if key in writes.new_closes:
                writes.new_closes[key] = writes.new_closes[key]._replace(timeline=timeline)
            elif key in writes.stored_closes:
                writes.stored_closes[key] = writes.stored_closes[key]._replace(timeline=timeline)
            return
        self.store.set_closed_timeline(key, timeline)

    def _on_fail(self, ev: Event) -> None:
        key = (ev.corr, _dest(ev), ev.flow)
        tx = self.pending.get(key)
        row = None
        if tx is None:
            row = self._closed_row(key)
            if row is not None:
                return  # already confirmed or failed: a late or redelivered fail changes nothing
            changed_at, source = ev.changed_at, ev.source
        else:
            changed_at, source = tx.changed_at, (tx.labels[1] if tx.labels[1] != UNKNOWN else ev.source)
        self._close(key, tx, "failed", ev, changed_at, None, source, row)

    def _observe_lag(self, flow: str, source: str | None, dest: str, lag: float) -> float:
        if lag < 0:
            # Source and destination clocks disagree; a negative lag is meaningless.
            self.batch.inc(self.metrics.clock_skew, (flow,))
            lag = 0.0
        self.batch.observe(self.metrics.sync_lag, (flow, source or UNKNOWN, dest), lag)
        return lag

    def _close(
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
            close = _new(Close, (ev.stage, ev.trace_id.hex(), ev.span_id.hex(), ev.start, ev.end, ev.error, ev.idem))
        else:
            closed_at, close_span, close = self.clock(), None, None
        attempts = 0
        h = corr_hash(corr)
        self.closed_keys.add(h)
        writes = self._writes
        if key in self._batch_closed:
            # Closed earlier in this batch (a fail, then its confirm): this close replaces that one.
            writes.new_closes.pop(key, None)
            writes.stored_closes.pop(key, None)
        elif row is not None:
            writes.closed_deletes.append(key)
        timeline: str | None
        if tx is not None:
            del self.pending[key]
            self._dirty.pop(key, None)
            attempts = len(tx.attempts) if tx.attempts else 0
            omitted = 0
            if attempts > INDEX_ATTEMPTS:
                self._index.pop(key, None)
                omitted = self._omitted.pop(key, 0)
                attempts += omitted
            deltas, delta = self._deltas, (self.metrics.pending, tx.labels)  # batch.inc, inlined on the hot path
            deltas[delta] = deltas.get(delta, 0) - 1
            if tx.overdue:
                self.batch.inc(self.metrics.overdue, tx.labels, -1)
            labels = tx.labels
            timeline = tx.timeline(close, omitted)
            if tx.stored:
                writes.stored_closes[key] = _new(
                    StoredClose, (source, outcome, changed_at, closed_at, lag, close_span, attempts, timeline, h, *key)
                )
                writes.open_deletes.append(key)
            else:
                src = tx.src or (None, None)
                writes.new_closes[key] = _new(
                    ClosedTxRow,
                    (*key, source, outcome, changed_at, tx.opened_at, tx.deadline, closed_at, lag, *src)
                    + (close_span, attempts, timeline, h),
                )
        else:
            labels = self._label_tuple(flow, source, dest)
            if row is not None and row.timeline:  # e.g. a confirm after a fail: keep the attempts already recorded
                doc: Timeline = orjson.loads(row.timeline)
                attempts = len(doc.get("attempts", ())) + doc.get("omitted", 0)
                doc["close"] = close  # type: ignore[typeddict-item]  # None: an expiry has no closing span
                timeline = to_json(doc)
            else:
                timeline = to_json({"attempts": [], "close": close}) if close else None
            writes.new_closes[key] = ClosedTxRow(
                *key,
                source,
                outcome,
                changed_at,
                None,
                None,
                closed_at,
                lag,
                None,
                None,
                close_span,
                attempts,
                timeline,
                h,
            )
        self._batch_closed[key] = _new(ClosedRow, (outcome, closed_at, lag, changed_at, close_span, timeline))
        deltas, closed = self._deltas, (self.metrics.transactions, (*labels, outcome))
        deltas[closed] = deltas.get(closed, 0) + 1
        if attempts:
            self.batch.observe(self.metrics.delivery_attempts, (flow, dest), attempts)

    def _relabel(self, tx: Tx, labels: TxLabels) -> None:
        m = self.metrics
        self.batch.inc(m.pending, tx.labels, -1)
        self.batch.inc(m.pending, labels)
        if tx.overdue:
            self.batch.inc(m.overdue, tx.labels, -1)
            self.batch.inc(m.overdue, labels)
        tx.labels = labels

    def _flush(self) -> None:
        # Deadlines of the transactions this batch opened and did not close. Most open and close
        # within a batch; their entries would only sit in the heap, stale, until their deadline.
        pending, schedule = self.pending, self.deadlines.schedule
        for key in self._opened:
            tx = pending.get(key)
            if tx is not None:
                schedule(key, tx.deadline)
        writes = self._writes
        if self._dirty:
            rows = writes.open_upserts
            omitted = self._omitted
            for key, tx in self._dirty.items():
                src = tx.src or (None, None)
                n_omitted = omitted.get(key, 0) if omitted else 0
                rows.append(
                    _new(
                        OpenTxRow,
                        (
                            *key,
                            tx.labels[1] if tx.labels[1] != UNKNOWN else None,
                            tx.changed_at,
                            tx.opened_at,
                            tx.deadline,
                            *src,
                            (len(tx.attempts) if tx.attempts else 0) + n_omitted,
                            tx.timeline(None, n_omitted),
                        ),
                    )
                )
                tx.stored = True
                tx.src = None  # written; memory need not keep it
        self.store.write_batch(writes)

    # ---- time --------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Mark transactions overdue at their deadline and expire them after the horizon."""
        now = self.clock() if now is None else now
        if self._stale:
            self._reset_memory()
        overdue, expired = self.deadlines.due(now, self.pending)
        for tx in overdue:
            self.batch.inc(self.metrics.overdue, tx.labels)
        self.batch.apply()
        if expired:
            self._expire(expired, now)
            self.batch.apply()
        cutoff = self.deadlines.sweep_due(now)
        if cutoff is not None:
            self.store.sweep(cutoff)

    def _expire(self, keys: list[TxKey], now: float) -> None:
        try:
            self.store.begin()
        except Exception:
            # Another process holds the write lock (or the disk fails): nothing changed, try again next tick.
            self.deadlines.retry_expiry(keys, now)
            raise
        try:
            self._new_batch()
            for key in keys:
                tx = self.pending[key]
                source = tx.labels[1] if tx.labels[1] != UNKNOWN else None
                self._close(key, tx, "expired", None, tx.changed_at, None, source)
            self._flush()
            self.store.commit()
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """After a failed write: roll back if the store has not already (a failed COMMIT, e.g. SQLITE_FULL,
        rolls back by itself) and rebuild memory from what is committed. Memory was ahead of the
        store; keeping it would make a retry of the same spans look already recorded."""
        self._stale = True
        try:
            self.store.rollback()
        except Exception as exc:
            log.error("ledger rollback failed: %s", exc)
        try:
            self._reset_memory()
        except Exception as exc:  # e.g. the disk is unreadable too: try again before the next write
            log.error("ledger: rebuilding memory after a failed write failed (will retry): %s", exc)

    def _reset_memory(self) -> None:
        self._new_batch()
        self.batch.discard()
        self.batch.zero_open_gauges()
        self.pending.clear()
        self._omitted.clear()
        self._index.clear()
        self.deadlines.clear()
        self.closed_keys = ClosedKeys()
        self.load()
        self._stale = False  # overdue marks come back at the next tick: deadlines are on the heap again

    def close(self) -> None:
        self.store.close()


def _start_time(ev: Event) -> float:
    return ev.start


def _dest(ev: Event) -> str:
    """The destination of an attempt, confirm or fail span (extraction refuses one without)."""
    return ev.dest  # type: ignore[return-value]
