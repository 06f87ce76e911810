"""The correlation ledger: transactions per (correlation ID, destination, flow), their attempts,
confirmation, outcome and deadline; durable in a store (store.LedgerStore, SQLite by default),
mirrored in memory for the hot path (memory.py).

Only the writer thread (syncwatch.intake.writer) calls `record` and `tick`; both run inside one store
transaction each, and the in-memory state mirrors what that transaction writes. Here: the batch,
opening and attempts; closing is closing.py, metric updates wait for the commit in metric_batch.py,
deadlines are deadlines.py, a batch's unwritten rows and its writes batch.py, attempt timelines
timelines.py.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import orjson

from syncwatch.config.models import Config
from syncwatch.ledger.batch import Batch
from syncwatch.ledger.closing import Closer
from syncwatch.ledger.deadlines import Deadlines
from syncwatch.ledger.flows import UNKNOWN, FlowRules
from syncwatch.ledger.memory import ClosedKeys, Tx
from syncwatch.ledger.metric_batch import MetricBatch
from syncwatch.ledger.records import Event, TxKey, TxLabels, attempts_of
from syncwatch.ledger.schema import STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_SOURCE
from syncwatch.ledger.sqlite_store import SqliteStore
from syncwatch.ledger.store import LedgerStore
from syncwatch.ledger.timelines import Timelines
from syncwatch.metrics.registry import Metrics

log = logging.getLogger("syncwatch.ledger")

MAX_LOGGED_FLOWS = 100  # flows whose untracked source spans were logged (once each)


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
        self.store: LedgerStore = open_store(config) if store is None else store
        self.flows = FlowRules(config)
        self.pending: dict[TxKey, Tx] = {}
        self.closed_keys = ClosedKeys()
        self.deadlines = Deadlines(config.storage.expire_after, clock)
        self.updates = MetricBatch(config, metrics)
        self._pending = self.updates.counts(metrics.pending)  # added to inline on the hot path
        self.timelines = Timelines(config.limits.max_timeline_attempts)
        self.batch = Batch(self.store, self.closed_keys)
        self.closer = Closer(
            self.store, self.pending, self.closed_keys, self.batch, self.timelines, self.updates, self.flows, clock
        )
        self._stale = False  # memory may be ahead of the store: rebuild before the next write
        self._untracked_flows: set[str] = set()
        for name, flow in config.flows.items():
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

    # ---- startup -----------------------------------------------------------------------------
    def load(self) -> int:
        """Rebuild the in-memory mirror of open transactions from the store (after a restart)."""
        pending = self.pending
        counts: dict[TxLabels, int] = defaultdict(int)
        intern = sys.intern
        loads = orjson.loads
        labels_of = self.flows.labels
        omitted = self.timelines.omitted
        due: list[tuple[TxKey, float]] = []
        for corr, dest, flow, source, changed_at, opened_at, deadline, timeline in self.store.open_rows():
            dest, flow = intern(dest), intern(flow)
            labels = labels_of(flow, intern(source) if source else None, dest)
            key = (corr, dest, flow)
            attempts = None
            if timeline:
                doc = loads(timeline)
                attempts = attempts_of(doc["attempts"]) or None
                if "omitted" in doc:
                    omitted[key] = doc["omitted"]
            pending[key] = Tx(labels, changed_at, opened_at, deadline, attempts, True)
            due.append((key, deadline))
            counts[labels] += 1
        self.deadlines.schedule_all(due)
        for labels, n in counts.items():
            self.updates.child(self.metrics.pending, *labels).set(n)
        add = self.closed_keys.add
        for h in self.store.closed_hashes():
            add(h)
        return len(pending)

    # ---- replicas (PostgreSQL): only the leader holds the ledger in memory ---------------------
    def take_over(self) -> int:
        """This replica leads now: rebuild memory from the store (the previous leader's writes)."""
        self._stale = True  # until the load completes: a failed load is retried before any write
        self.stand_down()
        self._reset_memory()
        return len(self.pending)

    def stand_down(self) -> None:
        """This replica no longer leads: forget the ledger's memory and its whole-ledger gauges."""
        self.batch.reset()
        self.updates.forget()
        self.pending.clear()
        self.timelines.clear()
        self.deadlines.clear()
        self.closed_keys.clear()

    # ---- writes ------------------------------------------------------------------------------
    def record(self, events: list[Event], drain: Callable[[], list[Event]] | None = None) -> None:
        """Record a batch of stage-span events in one store transaction; `drain` adds events taken
        inside that transaction (handed-off batches, applied exactly once with it). Raises when it
        could not commit; memory then still describes exactly what is committed."""
        if self._stale:
            self._reset_memory()
        self.store.begin()
        try:
            self.batch.reset()
            if drain is not None:
                events = [*events, *drain()]
            # Sources open transactions, attempts (in time order) update them, confirms and fails close them.
            sources: list[Event] = []
            attempts: list[Event] = []
            closes: list[Event] = []
            for ev in events:
                stage = ev.stage
                (sources if stage == STAGE_SOURCE else attempts if stage == STAGE_ATTEMPT else closes).append(ev)
            if sources:
                self.batch.prefetch_for(sources, self.pending, self.flows)
                on_source = self._on_source
                for ev in sources:
                    on_source(ev)
            self.batch.end_prefetch()
            if len(attempts) > 1:
                attempts.sort(key=_start_time)
            on_attempt = self._on_attempt
            for ev in attempts:
                on_attempt(ev)
            closer = self.closer
            for ev in closes:  # extraction refuses a confirm or fail without a destination
                if ev.stage == STAGE_CONFIRM:
                    closer.confirm(ev, ev.dest)  # type: ignore[arg-type]  # dest: set, see above
                else:
                    closer.fail(ev, ev.dest)  # type: ignore[arg-type]  # dest: set, see above
            self.batch.write(self.timelines.omitted, self.deadlines)
            self.store.commit()
        except BaseException:
            self._rollback()
            raise
        try:
            self.updates.apply()
        except Exception:  # committed: raising now would have the writer record the batch again
            log.exception("ledger: updating the metrics of a committed batch failed")

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
        tx = Tx(labels, changed_at, now, base + self.flows.deadline(flow), None, False, src)  # no keywords: no dict
        self.pending[key] = tx
        # Dirty from now on (the caller's): its deadline goes on the heap at the write, if it is still open then.
        pending = self._pending  # updates.inc, inlined on the hot path
        n = pending.get(labels)
        if n is None:
            self.updates.new_series(pending, labels, self.metrics.pending, labels)
            n = 0
        pending[labels] = n + 1
        return tx

    def _on_source(self, ev: Event) -> None:
        corr, flow, source = ev.corr, ev.flow, ev.source
        changed_at: float = ev.changed_at  # type: ignore[assignment]  # extraction sets it on a source span
        dests = self.flows.destinations(flow, source)
        if ev.dest and ev.dest not in dests:
            dests = (*dests, ev.dest)
        if not dests:
            self._untracked_source(flow)
        for dest in dests:
            key = (corr, dest, flow)
            tx = self.pending.get(key)
            if tx is not None:
                # Opened earlier by an attempt (or a redelivery of this source): keep the earliest change time.
                if tx.changed_at is None or changed_at < tx.changed_at:
                    tx.changed_at = changed_at
                    tx.src = (ev.trace_id, ev.span_id)
                    if source and tx.labels[1] == UNKNOWN:
                        self._relabel(tx, self.flows.labels(flow, source, dest))
                    if self.deadlines.moved(tx, key, changed_at + self.flows.deadline(flow)):
                        self.updates.inc(self.metrics.overdue, tx.labels, -1)
                    self.batch.dirty[tx] = key
                continue
            row = self.batch.closed_row(key)
            if row is not None:
                self.closer.late_source(key, row, ev, changed_at)
                continue
            tx = self._open(
                key, self.flows.labels(flow, source, dest), changed_at, ev.received, flow, (ev.trace_id, ev.span_id)
            )
            self.batch.dirty[tx] = key

    def _untracked_source(self, flow: str) -> None:
        """A source span that opens nothing: its flow configures no destination (here: replicas
        whose flows differ, or a flow nobody configured) and the span names none. Counted after the
        commit, logged once per flow."""
        self.updates.inc(self.metrics.dropped, ("no_destination",))
        logged = self._untracked_flows
        if flow not in logged and len(logged) < MAX_LOGGED_FLOWS:
            logged.add(flow)
            log.warning(
                "source span of flow %r names no destination and this replica's flows config gives it none: "
                'nothing to track (counted in syncwatch_dropped_total{reason="no_destination"}); '
                "set flows.<flow>.destinations (on every replica)",
                flow,
            )

    def _on_attempt(self, ev: Event) -> None:
        flow = ev.flow
        dest: str = ev.dest  # type: ignore[assignment]  # extraction refuses an attempt without one
        key = (ev.corr, dest, flow)
        span_hex = ev.span_id.hex()
        tx = self.pending.get(key)
        if tx is None:
            row = self.batch.closed_row(key)
            if row is not None:
                self.closer.late_attempt(key, row, ev, span_hex)
                return
            # Attempt before its source span: open now, deadline provisional until the source arrives.
            tx = self._open(key, self.flows.labels(flow, ev.source, dest), ev.changed_at, ev.start, flow)
        added = self.timelines.add(key, tx, ev, span_hex)
        if added is None:
            return  # the same span delivered again
        n, prev_end = added
        if prev_end is not None:
            self.updates.backoff(flow, dest, n, ev.start - prev_end)
        self.batch.dirty[tx] = key
        self.updates.attempt(flow, dest, ev.code, n)

    def _relabel(self, tx: Tx, labels: TxLabels) -> None:
        m, inc = self.metrics, self.updates.inc
        inc(m.pending, tx.labels, -1)
        inc(m.pending, labels)
        if tx.overdue:
            inc(m.overdue, tx.labels, -1)
            inc(m.overdue, labels)
        tx.labels = labels

    # ---- time --------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Mark transactions overdue at their deadline and expire them after the horizon."""
        now = self.clock() if now is None else now
        if self._stale:
            self._reset_memory()
        overdue, expired = self.deadlines.due(now, self.pending)
        for tx in overdue:
            self.updates.inc(self.metrics.overdue, tx.labels)
        self.updates.apply()
        if expired:
            self._expire(expired, now)
            self.updates.apply()
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
            self.batch.reset()
            for key in keys:
                tx = self.pending[key]
                source = tx.labels[1] if tx.labels[1] != UNKNOWN else None
                self.closer.close(key, tx, "expired", None, tx.changed_at, None, source)
            self.batch.write(self.timelines.omitted, self.deadlines)
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
        self.batch.reset()
        self.updates.discard()
        self.updates.zero_open_gauges()
        self.pending.clear()
        self.timelines.clear()
        self.deadlines.clear()
        self.closed_keys.clear()
        self.load()
        self._stale = False  # overdue marks come back at the next tick: deadlines are on the heap again

    def close(self) -> None:
        self.store.close()


def open_store(config: Config) -> LedgerStore:
    """The store storage.backend names; psycopg is imported only for PostgreSQL."""
    if config.storage.backend == "postgresql":
        from syncwatch.ledger.postgres_store import PostgresStore

        return PostgresStore(config)
    return SqliteStore(config)


_start_time = attrgetter("start")  # of an Event
