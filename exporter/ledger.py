"""The correlation ledger: transactions per (correlation ID, destination, flow), their attempts,
confirmation, outcome and deadline; durable in SQLite, mirrored in memory for the hot path.

Only the writer thread (exporter.intake) calls `record` and `tick`; both run inside one SQLite
transaction each, and the in-memory state mirrors what that transaction writes. Reads for the
query API use their own connections (WAL).
"""

from __future__ import annotations

import heapq
import logging
import math
import sqlite3
import sys
import time
from collections import defaultdict, deque
from pathlib import Path

from .config import Config
from .ledger_schema import DDL, SCHEMA_VERSION, STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_FAIL, STAGE_SOURCE
from .metrics import Metrics

log = logging.getLogger("syncwatch.ledger")

# Column order of an event tuple (see span_extract.SpanExtractor._event).
EVENT_COLUMNS = ("trace_id", "span_id", "corr", "flow", "stage", "source", "dest", "start", "end",
                 "changed_at", "attempt", "code", "error", "idem", "received")
(E_TRACE, E_SPAN, E_CORR, E_FLOW, E_STAGE, E_SOURCE, E_DEST, E_START, E_END,
 E_CHANGED, E_ATTEMPT, E_CODE, E_ERROR, E_IDEM, E_RECEIVED) = range(15)

_INSERT_SPANS_HEAD = f"INSERT INTO spans ({', '.join(EVENT_COLUMNS)}) VALUES "
_ROW = "(" + ",".join("?" * len(EVENT_COLUMNS)) + ")"
_ROWS_PER_STATEMENT = 2000  # 15 columns x 2000 rows stays below SQLite's variable limit (32766)

JITTER_WINDOW = 50  # recent backoffs kept per (flow, destination, attempt number)
JITTER_MIN_SAMPLES = 5
CHECK_OVERDUE, CHECK_EXPIRE = 0, 1
UNKNOWN = "unknown"


class Tx:
    """An open transaction. Slots keep a million of these well under 1 KiB each."""

    __slots__ = ("labels", "changed_at", "opened_at", "deadline", "attempts", "last_n", "last_end", "overdue")

    def __init__(self, labels, changed_at, opened_at, deadline, attempts=0, last_n=None, last_end=None):
        self.labels = labels  # shared (flow, source, destination) tuple
        self.changed_at = changed_at
        self.opened_at = opened_at
        self.deadline = deadline
        self.attempts = attempts
        self.last_n = last_n
        self.last_end = last_end
        self.overdue = False


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a committed transaction survives a process crash (kill -9); only an OS crash
    # or power loss can lose the last commits, which is the trade every WAL database makes.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class Ledger:
    def __init__(self, config: Config, metrics: Metrics, clock=time.time):
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.flows = config.flows
        self.expire_after = config.storage.expire_after
        self.unknown_deadline = config.correlation.unknown_flow_deadline
        self.conn = connect(config.storage.ledger_path)
        self.conn.executescript(DDL)
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self.pending: dict[tuple, Tx] = {}
        self._heap: list = []  # (time, check kind, key)
        self._labels: dict[tuple, tuple] = {}
        self._jitter: dict[tuple, deque] = defaultdict(lambda: deque(maxlen=JITTER_WINDOW))
        self._jitter_dirty: set = set()
        self._child_cache: dict = {}
        self._last_sweep = 0.0
        for name, flow in self.flows.items():
            metrics.flow_deadline.labels(name).set(flow.deadline)
        self._insert_sql_cache: dict[int, str] = {}

    # ---- helpers -----------------------------------------------------------------------------
    def _deadline_of(self, flow: str) -> float:
        cfg = self.flows.get(flow)
        return cfg.deadline if cfg is not None else self.unknown_deadline

    def _exactly_once(self, flow: str) -> bool:
        cfg = self.flows.get(flow)
        return cfg.exactly_once if cfg is not None else True

    def _label_tuple(self, flow, source, dest):
        key = (flow, source or UNKNOWN, dest)
        labels = self._labels.get(key)
        if labels is None:
            labels = self._labels[key] = key
        return labels

    def _child(self, metric, *labels):
        # prometheus-client's labels() is the expensive part of an update: cache the children.
        key = (id(metric), labels)
        child = self._child_cache.get(key)
        if child is None:
            child = self._child_cache[key] = metric.labels(*labels)
        return child

    # ---- startup -----------------------------------------------------------------------------
    def load(self) -> int:
        """Rebuild the in-memory mirror of open transactions from SQLite (after a restart)."""
        pending = self.pending
        heap = self._heap
        counts: dict[tuple, int] = defaultdict(int)
        intern = sys.intern
        rows = self.conn.execute(
            "SELECT corr, dest, flow, source, changed_at, opened_at, deadline, attempts, last_attempt_n, last_attempt_end FROM open_tx"
        )
        while True:
            chunk = rows.fetchmany(50_000)
            if not chunk:
                break
            for corr, dest, flow, source, changed_at, opened_at, deadline, attempts, last_n, last_end in chunk:
                dest, flow = intern(dest), intern(flow)
                labels = self._label_tuple(flow, intern(source) if source else None, dest)
                key = (corr, dest, flow)
                pending[key] = Tx(labels, changed_at, opened_at, deadline, attempts, last_n, last_end)
                heap.append((deadline, CHECK_OVERDUE, key))
                counts[labels] += 1
        heapq.heapify(heap)
        for labels, n in counts.items():
            self._child(self.metrics.pending, *labels).set(n)
        return len(pending)

    # ---- writes ------------------------------------------------------------------------------
    def record(self, events: list[tuple]) -> int:
        """Record a batch of stage-span events in one SQLite transaction. Returns how many were new."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            new = self._insert_new(events)
            self._dirty: dict = {}
            self._closed: list = []
            if new:
                new.sort(key=_event_order)
                for ev in new:
                    stage = ev[E_STAGE]
                    if stage == STAGE_ATTEMPT:
                        self._on_attempt(ev)
                    elif stage == STAGE_SOURCE:
                        self._on_source(ev)
                    elif stage == STAGE_CONFIRM:
                        self._on_confirm(ev)
                    else:
                        self._on_fail(ev)
                self._flush()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            # Memory may now be ahead of the database: rebuild it from what is committed.
            self._reset_memory()
            raise
        self._update_jitter()
        return len(new)

    def _insert_new(self, events):
        """Insert spans, skipping ones already recorded; return the events that were new."""
        conn = self.conn
        new = []
        by_id = {}
        for ev in events:
            by_id[(ev[E_TRACE], ev[E_SPAN])] = ev  # a span twice in one batch counts once
        unique = list(by_id.values())
        for i in range(0, len(unique), _ROWS_PER_STATEMENT):
            chunk = unique[i:i + _ROWS_PER_STATEMENT]
            sql = self._insert_sql_cache.get(len(chunk))
            if sql is None:
                sql = _INSERT_SPANS_HEAD + ",".join([_ROW] * len(chunk)) + " ON CONFLICT DO NOTHING RETURNING trace_id, span_id"
                if len(self._insert_sql_cache) < 64:
                    self._insert_sql_cache[len(chunk)] = sql
            params = [v for ev in chunk for v in ev]
            for trace_id, span_id in conn.execute(sql, params):
                new.append(by_id[(trace_id, span_id)])
        return new

    def _open(self, key, labels, changed_at, now, flow) -> Tx:
        base = changed_at if changed_at is not None else now
        tx = Tx(labels, changed_at, now, base + self._deadline_of(flow))
        self.pending[key] = tx
        heapq.heappush(self._heap, (tx.deadline, CHECK_OVERDUE, key))
        self._child(self.metrics.pending, *labels).inc()
        return tx

    def _closed_row(self, key):
        return self.conn.execute(
            "SELECT outcome, closed_at, lag, changed_at FROM closed_tx WHERE corr=? AND dest=? AND flow=?", key
        ).fetchone()

    def _on_source(self, ev):
        corr, flow, source = ev[E_CORR], ev[E_FLOW], ev[E_SOURCE]
        changed_at = ev[E_CHANGED]
        cfg = self.flows.get(flow)
        dests = [d for d in (cfg.destinations if cfg else ()) if d != source]
        if ev[E_DEST] and ev[E_DEST] not in dests:
            dests.append(ev[E_DEST])
        for dest in dests:
            key = (corr, dest, flow)
            tx = self.pending.get(key)
            if tx is not None:
                # Opened earlier by an attempt: now we know when the change really happened.
                if tx.changed_at is None or changed_at < tx.changed_at:
                    tx.changed_at = changed_at
                    if source and tx.labels[1] == UNKNOWN:
                        self._relabel(tx, self._label_tuple(flow, source, dest))
                    self._set_deadline(key, tx, changed_at + self._deadline_of(flow))
                    self._dirty[key] = tx
                continue
            row = self._closed_row(key)
            if row is not None:
                outcome, closed_at, lag, _ = row
                if outcome == "confirmed" and lag is None:
                    # The confirm arrived first; the lag is known only now.
                    lag = self._observe_lag(flow, source, dest, closed_at - changed_at)
                self.conn.execute(
                    "UPDATE closed_tx SET lag=?, changed_at=?, source=COALESCE(source, ?) WHERE corr=? AND dest=? AND flow=?",
                    (lag, changed_at, source, *key),
                )
                continue
            self._dirty[key] = self._open(key, self._label_tuple(flow, source, dest), changed_at, ev[E_RECEIVED], flow)

    def _on_attempt(self, ev):
        corr, flow, dest = ev[E_CORR], ev[E_FLOW], ev[E_DEST]
        key = (corr, dest, flow)
        code = ev[E_CODE] or "none"
        m = self.metrics
        tx = self.pending.get(key)
        if tx is None and self._closed_row(key) is None:
            # Attempt before its source span: open now, deadline provisional until the source arrives.
            tx = self._open(key, self._label_tuple(flow, ev[E_SOURCE], dest), ev[E_CHANGED], ev[E_START], flow)
        n = ev[E_ATTEMPT]
        if tx is None:
            n = n or 2  # an attempt after the transaction closed is a retry
        else:
            if n is None:
                n = (tx.last_n or tx.attempts) + 1
            if tx.last_end is not None and tx.last_n == n - 1:
                backoff = ev[E_START] - tx.last_end
                if backoff >= 0:
                    self._child(m.retry_backoff, flow, dest).observe(backoff)
                    self._jitter[(flow, dest, n)].append(backoff)
                    self._jitter_dirty.add((flow, dest))
            tx.attempts += 1
            if tx.last_n is None or n >= tx.last_n:
                tx.last_n, tx.last_end = n, ev[E_END]
            self._dirty[key] = tx
        self._child(m.attempts, flow, dest, code).inc()
        if n > 1:
            self._child(m.retries, flow, dest).inc()

    def _on_confirm(self, ev):
        corr, flow, dest = ev[E_CORR], ev[E_FLOW], ev[E_DEST]
        key = (corr, dest, flow)
        idem = ev[E_IDEM] or f"{corr}\x1f{dest}"
        (applies,) = self.conn.execute(
            "INSERT INTO applies (idem, corr, dest, flow, first_at, last_at, applies) VALUES (?,?,?,?,?,?,1) "
            "ON CONFLICT(idem) DO UPDATE SET applies = applies + 1, last_at = excluded.last_at RETURNING applies",
            (idem, corr, dest, flow, ev[E_END], ev[E_END]),
        ).fetchone()
        if applies > 1:
            if self._exactly_once(flow):
                self._child(self.metrics.duplicate_applies, flow, dest).inc()
                self.conn.execute("UPDATE spans SET dup=1 WHERE trace_id=? AND span_id=?", (ev[E_TRACE], ev[E_SPAN]))
            return
        tx = self.pending.get(key)
        if tx is not None:
            changed_at = tx.changed_at if tx.changed_at is not None else ev[E_CHANGED]
            source = tx.labels[1] if tx.labels[1] != UNKNOWN else ev[E_SOURCE]
        else:
            row = self._closed_row(key)
            if row is not None and row[0] == "confirmed":
                return  # confirmed under another idempotency key: the transaction is already closed
            changed_at = ev[E_CHANGED]
            if changed_at is None and row is not None:
                changed_at = row[3]
            source = ev[E_SOURCE]
        lag = None
        if changed_at is not None:
            lag = self._observe_lag(flow, source, dest, ev[E_END] - changed_at)
        self._close(key, tx, "confirmed", ev[E_END], changed_at, lag, source)

    def _on_fail(self, ev):
        corr, flow, dest = ev[E_CORR], ev[E_FLOW], ev[E_DEST]
        key = (corr, dest, flow)
        tx = self.pending.get(key)
        if tx is None:
            row = self._closed_row(key)
            if row is not None:
                return  # already confirmed (or failed): a late fail changes nothing
            changed_at, source = ev[E_CHANGED], ev[E_SOURCE]
        else:
            changed_at, source = tx.changed_at, (tx.labels[1] if tx.labels[1] != UNKNOWN else ev[E_SOURCE])
        self._close(key, tx, "failed", ev[E_END], changed_at, None, source)

    def _observe_lag(self, flow, source, dest, lag):
        if lag < 0:
            # Source and destination clocks disagree; a negative lag is meaningless.
            self._child(self.metrics.clock_skew, flow).inc()
            lag = 0.0
        self._child(self.metrics.sync_lag, flow, source or UNKNOWN, dest).observe(lag)
        return lag

    def _close(self, key, tx, outcome, closed_at, changed_at, lag, source):
        corr, dest, flow = key
        attempts = 0
        if tx is not None:
            del self.pending[key]
            attempts = tx.attempts
            self._child(self.metrics.pending, *tx.labels).dec()
            if tx.overdue:
                self._child(self.metrics.overdue, *tx.labels).dec()
            labels = tx.labels
        else:
            labels = self._label_tuple(flow, source, dest)
        self._dirty[key] = None
        self._closed.append((corr, dest, flow, source, outcome, changed_at, closed_at, lag, attempts))
        self._child(self.metrics.transactions, *labels, outcome).inc()
        if attempts:
            self._child(self.metrics.delivery_attempts, flow, dest).observe(attempts)

    def _relabel(self, tx, labels):
        m = self.metrics
        self._child(m.pending, *tx.labels).dec()
        self._child(m.pending, *labels).inc()
        if tx.overdue:
            self._child(m.overdue, *tx.labels).dec()
            self._child(m.overdue, *labels).inc()
        tx.labels = labels

    def _set_deadline(self, key, tx, deadline):
        tx.deadline = deadline
        heapq.heappush(self._heap, (deadline, CHECK_OVERDUE, key))
        if tx.overdue and deadline > self.clock():
            tx.overdue = False  # the provisional deadline was too early
            self._child(self.metrics.overdue, *tx.labels).dec()

    def _flush(self):
        upserts, deletes = [], []
        for key, tx in self._dirty.items():
            if tx is None:
                deletes.append(key)
            else:
                upserts.append((*key, tx.labels[1] if tx.labels[1] != UNKNOWN else None, tx.changed_at,
                                tx.opened_at, tx.deadline, tx.attempts, tx.last_n, tx.last_end))
        conn = self.conn
        if upserts:
            conn.executemany(
                "INSERT OR REPLACE INTO open_tx (corr, dest, flow, source, changed_at, opened_at, deadline, attempts, "
                "last_attempt_n, last_attempt_end) VALUES (?,?,?,?,?,?,?,?,?,?)", upserts)
        if deletes:
            conn.executemany("DELETE FROM open_tx WHERE corr=? AND dest=? AND flow=?", deletes)
        if self._closed:
            conn.executemany(
                "INSERT OR REPLACE INTO closed_tx (corr, dest, flow, source, outcome, changed_at, closed_at, lag, attempts) "
                "VALUES (?,?,?,?,?,?,?,?,?)", self._closed)

    def _update_jitter(self):
        for flow, dest in self._jitter_dirty:
            total_w = total = 0.0
            for (f, d, _n), window in self._jitter.items():
                if f != flow or d != dest or len(window) < JITTER_MIN_SAMPLES:
                    continue
                mean = sum(window) / len(window)
                if mean <= 0:
                    continue
                sd = math.sqrt(sum((b - mean) ** 2 for b in window) / len(window))
                total += (sd / mean) * len(window)
                total_w += len(window)
            if total_w:
                self._child(self.metrics.retry_jitter, flow, dest).set(total / total_w)
        self._jitter_dirty.clear()

    # ---- time --------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Mark transactions overdue at their deadline and expire them after the horizon."""
        now = self.clock() if now is None else now
        heap, pending, m = self._heap, self.pending, self.metrics
        expired = []
        while heap and heap[0][0] <= now:
            when, kind, key = heapq.heappop(heap)
            tx = pending.get(key)
            if tx is None:
                continue
            if kind == CHECK_OVERDUE:
                if tx.deadline != when or tx.overdue:
                    continue  # stale entry: the deadline moved
                tx.overdue = True
                self._child(m.overdue, *tx.labels).inc()
                base = tx.changed_at if tx.changed_at is not None else tx.opened_at
                heapq.heappush(heap, (max(base + self.expire_after, when), CHECK_EXPIRE, key))
            elif tx.overdue:
                expired.append(key)
        if expired:
            self._expire(expired, now)
        if now - self._last_sweep >= 60:
            self._last_sweep = now
            self._sweep(now)

    def _expire(self, keys, now):
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self._dirty, self._closed = {}, []
            for key in keys:
                tx = self.pending[key]
                self._close(key, tx, "expired", now, tx.changed_at, None, tx.labels[1])
            self._flush()
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._reset_memory()
            raise

    def _sweep(self, now):
        """Forget closed transactions (and their spans) older than the expiry horizon, in small batches."""
        cutoff = now - self.expire_after
        conn = self.conn
        for sql in (
            "DELETE FROM closed_tx WHERE (corr, dest, flow) IN "
            "(SELECT corr, dest, flow FROM closed_tx WHERE closed_at < ? LIMIT 5000)",
            "DELETE FROM applies WHERE idem IN (SELECT idem FROM applies WHERE last_at < ? LIMIT 5000)",
            "DELETE FROM spans WHERE (trace_id, span_id) IN (SELECT trace_id, span_id FROM spans WHERE received < ? "
            "AND corr NOT IN (SELECT corr FROM open_tx) LIMIT 5000)",
        ):
            try:
                conn.execute(sql, (cutoff,))
            except sqlite3.Error:
                # Sweeping loses nothing when it fails; it only delays clean-up until the next minute.
                log.exception("ledger sweep failed; will retry in a minute")

    def _reset_memory(self):
        m = self.metrics
        for labels, _ in list(self._labels.items()):
            self._child(m.pending, *labels).set(0)
            self._child(m.overdue, *labels).set(0)
        self.pending.clear()
        self._heap.clear()
        self.load()
        self.tick()

    # ---- reads for the process itself ---------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        pending = len(self.pending)
        overdue = sum(1 for tx in self.pending.values() if tx.overdue)
        return pending, overdue

    def close(self):
        self.conn.close()


def _event_order(ev):
    # Within a batch: sources first (they open transactions), then attempts by start, then closes.
    stage = ev[E_STAGE]
    order = 0 if stage == STAGE_SOURCE else 1 if stage == STAGE_ATTEMPT else 2
    return (order, ev[E_START])
