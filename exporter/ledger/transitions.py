"""The correlation ledger: transactions per (correlation ID, destination, flow), their attempts,
confirmation, outcome and deadline; durable in SQLite, mirrored in memory for the hot path.

Only the writer thread (syncwatch.intake.writer) calls `record` and `tick`; both run inside one SQLite
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

import orjson

from syncwatch.config.errors import ConfigError
from syncwatch.config.models import Config
from syncwatch.ledger.schema import (
    DDL,
    MIGRATE_FROM_3,
    MIGRATE_FROM_4,
    SCHEMA_VERSION,
    STAGE_ATTEMPT,
    STAGE_CONFIRM,
    STAGE_SOURCE,
    corr_hash,
)
from syncwatch.metrics.labels import LabelSets
from syncwatch.metrics.registry import Metrics

log = logging.getLogger("syncwatch.ledger")

# Field order of an event tuple (built by span_extract.SpanExtractor._event).
EVENT_COLUMNS = (
    "trace_id",
    "span_id",
    "corr",
    "flow",
    "stage",
    "source",
    "dest",
    "start",
    "end",
    "changed_at",
    "attempt",
    "code",
    "error",
    "idem",
    "received",
)
(
    E_TRACE,
    E_SPAN,
    E_CORR,
    E_FLOW,
    E_STAGE,
    E_SOURCE,
    E_DEST,
    E_START,
    E_END,
    E_CHANGED,
    E_ATTEMPT,
    E_CODE,
    E_ERROR,
    E_IDEM,
    E_RECEIVED,
) = range(15)
# Attempt entries in a timeline: [trace_id hex, span_id hex, start, end, n, code, error]
A_SPAN, A_END, A_N = 1, 3, 4

JITTER_WINDOW = 50  # recent backoffs kept per (flow, destination, attempt number)
JITTER_MIN_SAMPLES = 5
JITTER_MAX_N = 16  # attempt numbers above this share one jitter window
TIMELINE_HEAD = 10  # attempts kept from the start of a capped timeline; the rest are the latest ones
INDEX_ATTEMPTS = 32  # above this many attempts, a transaction's span IDs are found through a set
MAX_DUPLICATES = 100  # duplicate applies listed per transaction; more are counted
CHECK_OVERDUE, CHECK_EXPIRE = 0, 1
UNKNOWN = "unknown"
MAX_SHARED_LABELS = 100_000  # distinct (flow, source, destination) tuples shared between transactions
# Checkpoints run on their own thread (ledger_checkpoint.py); this is the writer's backstop, ~80 MB of WAL.
WAL_AUTOCHECKPOINT_PAGES = 20_000

_UPSERT_OPEN = (
    "INSERT INTO open_tx (corr, dest, flow, source, changed_at, opened_at, deadline, source_trace, source_span, "
    "attempts, timeline) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(corr, dest, flow) DO UPDATE SET "
    "source=excluded.source, changed_at=excluded.changed_at, deadline=excluded.deadline, attempts=excluded.attempts, "
    "timeline=excluded.timeline, source_trace=COALESCE(excluded.source_trace, source_trace), "
    "source_span=COALESCE(excluded.source_span, source_span)"
)
_CLOSE_STORED = (
    "INSERT INTO closed_tx (corr, dest, flow, source, outcome, changed_at, opened_at, deadline, closed_at, "
    "lag, source_trace, source_span, close_span, attempts, timeline, corr_hash) SELECT corr, dest, flow, ?, ?, ?, "
    "opened_at, deadline, ?, ?, source_trace, source_span, ?, ?, ?, ? FROM open_tx WHERE corr=? AND dest=? AND flow=?"
)
_CLOSE_NEW = (
    "INSERT INTO closed_tx (corr, dest, flow, source, outcome, changed_at, opened_at, deadline, closed_at, "
    "lag, source_trace, source_span, close_span, attempts, timeline, corr_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
# closed_tx rows are found by corr_hash (indexed) and then the key; parameters: (corr_hash, corr, dest, flow).
_CLOSED_KEY = "corr_hash=? AND corr=? AND dest=? AND flow=?"
SWEEP_BATCH = 5000
SWEEP_ROUNDS = 20  # per minute: up to 100,000 rows of each table


def closed_lookup_sql(n: int) -> str:
    """SELECT the closed rows of n keys, given as (corr, dest, flow, corr_hash) parameters. A join
    from the VALUES list, not `(...) IN (VALUES ...)`: SQLite plans that row-value IN as a scan
    of closed_tx, whose cost grows with every transaction ever closed."""
    return (
        "SELECT c.corr, c.dest, c.flow, outcome, closed_at, lag, changed_at, close_span, timeline "
        "FROM (VALUES " + ",".join(["(?,?,?,?)"] * n) + ") AS k CROSS JOIN closed_tx AS c "
        "ON c.corr_hash = k.column4 AND c.corr = k.column1 AND c.dest = k.column2 AND c.flow = k.column3"
    )


def _closed_key(key) -> tuple:
    return (corr_hash(key[0]), *key)


class ClosedKeys:
    """Which correlation IDs may have a closed_tx row: one bit per corr_hash, modulo 2**27 (16 MiB).

    Every source span must find out whether its transaction already closed (a confirm that arrived
    first, a redelivered source); almost always it has not. A clear bit answers that without asking
    SQLite. A set bit may be another ID's (about 1 in 14 with 10 million closed rows) or a row swept
    since; the lookup then just goes to SQLite. Bits are set before a close commits and rebuilt
    from closed_tx at start."""

    BITS = 1 << 27

    def __init__(self):
        self.bits = bytearray(self.BITS >> 3)

    def add(self, h: int) -> None:
        h &= self.BITS - 1
        self.bits[h >> 3] |= 1 << (h & 7)

    def may_contain(self, h: int) -> bool:
        h &= self.BITS - 1
        return bool(self.bits[h >> 3] & (1 << (h & 7)))


def _to_json(doc) -> str:
    # orjson: the timeline is encoded on every close, on the hot path; it is ~10x faster than json.
    return orjson.dumps(doc).decode()


class Tx:
    """An open transaction. Slots keep a million of these well under 1 KiB each."""

    __slots__ = ("attempts", "changed_at", "deadline", "labels", "opened_at", "overdue", "src", "stored")

    def __init__(self, labels, changed_at, opened_at, deadline, attempts=None, stored=False, src=None):
        self.labels = labels  # shared (flow, source, destination) tuple
        self.changed_at = changed_at
        self.opened_at = opened_at
        self.deadline = deadline
        self.attempts = attempts  # list of timeline attempt entries, None until the first attempt
        self.overdue = False
        self.stored = stored  # has a row in open_tx (a transaction opened and closed in one batch never gets one)
        self.src = src  # (trace_id, span_id) of the source span until it is written

    def timeline(self, close=None, omitted=0) -> str | None:
        if not self.attempts and close is None:
            return None
        doc = {"attempts": self.attempts or []}
        if omitted:
            doc["omitted"] = omitted
        if close is not None:
            doc["close"] = close
        return _to_json(doc)


class AttemptIndex:
    """Span IDs and attempt numbers of a transaction with many attempts (a retry storm), so each
    new attempt costs the same however many came before it."""

    __slots__ = ("end_of", "max_n", "spans")

    def __init__(self, attempts):
        self.spans = {a[A_SPAN] for a in attempts}
        self.max_n = max(a[A_N] for a in attempts)
        self.end_of = {a[A_N]: a[A_END] for a in attempts}  # attempt number -> end of its latest span

    def add(self, entry):
        self.spans.add(entry[A_SPAN])
        self.max_n = max(self.max_n, entry[A_N])
        end_of = self.end_of
        if len(end_of) > 4 * INDEX_ATTEMPTS and entry[A_N] not in end_of:
            end_of.clear()  # many distinct numbers: keep only recent ones (bounded memory)
        end_of[entry[A_N]] = entry[A_END]


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
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    return conn


class Ledger:
    def __init__(self, config: Config, metrics: Metrics, clock=time.time):
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.flows = config.flows
        self.expire_after = config.storage.expire_after
        self.unknown_deadline = config.correlation.unknown_flow_deadline
        try:
            self.conn = connect(config.storage.ledger_path)
            self.conn.execute("PRAGMA user_version")  # touches the file: fails here if it cannot be opened
        except (OSError, sqlite3.Error) as exc:
            key = "storage.sqlite_path" if config.storage.sqlite_path else "storage.data_dir"
            raise ConfigError(
                key, f"cannot open the ledger at {config.storage.ledger_path}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        version = self._schema_version()
        if version in (3, 4):
            self._migrate(version)
        elif version not in (None, SCHEMA_VERSION):
            raise RuntimeError(
                f"ledger {config.storage.ledger_path} has schema version {version}, this syncwatch "
                f"needs {SCHEMA_VERSION}: move the old file away (or set storage.sqlite_path)"
            )
        self.conn.executescript(DDL)
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self.pending: dict[tuple, Tx] = {}
        self.closed_keys = ClosedKeys()
        self._heap: list = []  # (time, check kind, key)
        self.label_sets = LabelSets(config, metrics)
        self._labels: dict[tuple, tuple] = {}
        self._fold_cache: dict[tuple, tuple] = {}
        self._dests: dict[tuple, tuple] = {}
        self.max_attempts = config.limits.max_timeline_attempts
        self._omitted: dict[tuple, int] = {}  # key -> attempts dropped from the middle of its timeline
        self._index: dict[tuple, AttemptIndex] = {}  # key -> index of a transaction with many attempts
        self._stale = False  # memory may be ahead of the database: rebuild before the next write
        self._jitter: dict[tuple, deque] = defaultdict(lambda: deque(maxlen=JITTER_WINDOW))
        self._jitter_dirty: set = set()
        self._backoffs: list = []  # (jitter key, backoff) of this batch, added to the windows after commit
        self._child_cache: dict = {}
        self._last_sweep = 0.0
        self._deltas: dict = {}
        self._obs: dict = {}  # (BatchHistogram, labels) -> values observed in this batch
        self._new_batch()
        for name, flow in self.flows.items():
            metrics.flow_deadline.labels(name).set(flow.deadline)

    def _migrate(self, version: int):
        log.info("ledger %s: migrating schema %d -> %d", self.config.storage.ledger_path, version, SCHEMA_VERSION)
        self.conn.create_function("syncwatch_corr_hash", 1, corr_hash, deterministic=True)
        steps = (MIGRATE_FROM_3 if version == 3 else "") + MIGRATE_FROM_4
        try:
            self.conn.executescript(
                f"BEGIN IMMEDIATE; {steps} UPDATE meta SET value='{SCHEMA_VERSION}' WHERE key='schema_version'; COMMIT;"
            )
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")  # the file stays at its old schema, as it was
            raise RuntimeError(
                f"ledger {self.config.storage.ledger_path}: migrating schema {version} -> "
                f"{SCHEMA_VERSION} failed, the file is unchanged: {exc}"
            ) from None

    def _schema_version(self):
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:
            return None
        return int(row[0]) if row else None

    # ---- helpers -----------------------------------------------------------------------------
    def _deadline_of(self, flow: str) -> float:
        cfg = self.flows.get(flow)
        return cfg.deadline if cfg is not None else self.unknown_deadline

    def _exactly_once(self, flow: str) -> bool:
        cfg = self.flows.get(flow)
        return cfg.exactly_once if cfg is not None else True

    def _destinations(self, flow, source) -> tuple:
        """The configured destinations a source span of `flow` from `source` opens transactions for."""
        dests = self._dests.get((flow, source))
        if dests is None:
            cfg = self.flows.get(flow)
            dests = self._dests[(flow, source)] = tuple(d for d in (cfg.destinations if cfg else ()) if d != source)
        return dests

    def _label_tuple(self, flow, source, dest):
        """(flow, source, destination) of a transaction, one shared tuple per distinct value. These
        are the span's values; metric labels are folded from them (see _metric_labels)."""
        key = (flow, source or UNKNOWN, dest)
        labels = self._labels.get(key)
        if labels is None:
            labels = key
            if len(self._labels) < MAX_SHARED_LABELS:
                self._labels[key] = key
        return labels

    def _child(self, metric, *labels):
        # prometheus-client's labels() is the expensive part of an update: cache the children.
        folded = self._metric_labels(metric, labels)
        key = (id(metric), folded)
        child = self._child_cache.get(key)
        if child is None:
            child = self._child_cache[key] = metric.labels(*folded)
        return child

    def _metric_labels(self, metric, labels: tuple) -> tuple:
        """Span values to metric labels from bounded sets (labels.LabelSets); cached only when
        nothing was folded, so the cache is as bounded as the label sets."""
        key = (id(metric), labels)
        folded = self._fold_cache.get(key)
        if folded is not None:
            return folded
        names = getattr(metric, "_labelnames", None) or metric.labelnames
        sets, out, flow = self.label_sets, [], None
        for name, value in zip(names, labels, strict=False):
            if name == "flow":
                value = flow = sets.flow(value)
            elif name in ("source", "destination"):
                value = UNKNOWN if value == UNKNOWN else sets.system(flow, value)
            elif name == "status_code":
                value = sets.code(value)
            out.append(value)
        folded = tuple(out)
        if folded == labels:
            self._fold_cache[key] = folded
        return folded

    def _inc(self, metric, labels, n=1):
        # Metric updates wait for the commit: they then describe exactly what is durable, and a
        # batch costs one update per series instead of one per span.
        key = (metric, labels)
        self._deltas[key] = self._deltas.get(key, 0) + n

    def _observe(self, histogram, labels, value):
        values = self._obs.get((histogram, labels))
        if values is None:
            self._obs[(histogram, labels)] = [value]
        else:
            values.append(value)

    def _apply_metrics(self):
        for (metric, labels), n in self._deltas.items():
            if n:
                self._child(metric, *labels).inc(n)
        for (metric, labels), values in self._obs.items():
            metric.observe_many(self._metric_labels(metric, labels), values)
        self._deltas.clear()
        self._obs.clear()

    def _new_batch(self):
        self._closed_cache: dict | None = None  # prefetched closed rows, valid while sources are handled
        self._batch_closed: dict = {}  # closes of this batch, as _closed_row rows
        self._dirty: dict = {}  # key -> Tx to upsert into open_tx
        # Closes to write, by key: a later close of the same key in this batch replaces an earlier one.
        self._close_stored: dict = {}  # from their open_tx row
        self._close_new: dict = {}  # never stored as open
        self._deletes: list = []  # open_tx rows
        self._closed_deletes: list = []  # closed_tx rows a close replaces (a confirm after a fail)
        self._opened: list = []  # keys opened in this batch

    # ---- startup -----------------------------------------------------------------------------
    def load(self) -> int:
        """Rebuild the in-memory mirror of open transactions from SQLite (after a restart)."""
        pending = self.pending
        heap = self._heap
        counts: dict[tuple, int] = defaultdict(int)
        intern = sys.intern
        loads = orjson.loads
        rows = self.conn.execute(
            "SELECT corr, dest, flow, source, changed_at, opened_at, deadline, timeline FROM open_tx"
        )
        while True:
            chunk = rows.fetchmany(50_000)
            if not chunk:
                break
            for corr, dest, flow, source, changed_at, opened_at, deadline, timeline in chunk:
                dest, flow = intern(dest), intern(flow)
                labels = self._label_tuple(flow, intern(source) if source else None, dest)
                key = (corr, dest, flow)
                attempts = None
                if timeline:
                    doc = loads(timeline)
                    attempts = doc["attempts"] or None
                    if "omitted" in doc:
                        self._omitted[key] = doc["omitted"]
                pending[key] = Tx(labels, changed_at, opened_at, deadline, attempts, True)
                heap.append((deadline, CHECK_OVERDUE, key))
                counts[labels] += 1
        heapq.heapify(heap)
        for labels, n in counts.items():
            self._child(self.metrics.pending, *labels).set(n)
        add = self.closed_keys.add
        rows = self.conn.execute("SELECT corr_hash FROM closed_tx")
        while chunk := rows.fetchmany(50_000):
            for (h,) in chunk:
                add(h)
        return len(pending)

    # ---- writes ------------------------------------------------------------------------------
    def record(self, events: list[tuple]) -> None:
        """Record a batch of stage-span events in one SQLite transaction. Raises when it could not
        commit; memory then still describes exactly what is committed."""
        conn = self.conn
        if self._stale:
            self._reset_memory()
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._new_batch()
            # Sources open transactions, attempts (in time order) update them, confirms and fails close them.
            sources, attempts, closes = [], [], []
            for ev in events:
                stage = ev[E_STAGE]
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
                if ev[E_STAGE] == STAGE_CONFIRM:
                    self._on_confirm(ev)
                else:
                    self._on_fail(ev)
            self._flush()
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._apply_metrics()
        if self._backoffs:
            self._update_jitter()

    def _open(self, key, labels, changed_at, now, flow, src=None) -> Tx:
        base = changed_at if changed_at is not None else now
        tx = Tx(labels, changed_at, now, base + self._deadline_of(flow), src=src)
        self.pending[key] = tx
        self._opened.append(key)  # its deadline goes on the heap at flush, if it is still open then
        deltas, delta = self._deltas, (self.metrics.pending, labels)  # _inc, inlined on the hot path
        deltas[delta] = deltas.get(delta, 0) + 1
        return tx

    def _prefetch_closed(self, sources):
        """Look up, in a few statements, which of the transactions these sources would open are
        already closed (confirm before source, or a redelivered source)."""
        keys = []
        pending = self.pending
        may_be_closed = self.closed_keys.may_contain
        for ev in sources:
            if not may_be_closed(corr_hash(ev[E_CORR])):
                continue  # no transaction with this correlation ID ever closed
            cfg = self.flows.get(ev[E_FLOW])
            for dest in cfg.destinations if cfg else ():
                key = (ev[E_CORR], dest, ev[E_FLOW])
                if key not in pending:
                    keys.append(key)
            if ev[E_DEST]:
                keys.append((ev[E_CORR], ev[E_DEST], ev[E_FLOW]))
        found = self._closed_cache = {}
        for i in range(0, len(keys), 300):
            chunk = keys[i : i + 300]
            params = [v for key in chunk for v in (*key, corr_hash(key[0]))]
            for row in self.conn.execute(closed_lookup_sql(len(chunk)), params):
                found[row[:3]] = row[3:]

    def _closed_row(self, key):
        row = self._batch_closed.get(key)
        if row is not None:
            return row  # closed earlier in this batch, not yet written
        cache = self._closed_cache
        if cache is not None:
            if key in cache:
                return cache[key]
            return None
        h = corr_hash(key[0])
        if not self.closed_keys.may_contain(h):
            return None
        return self.conn.execute(
            "SELECT outcome, closed_at, lag, changed_at, close_span, timeline FROM closed_tx WHERE " + _CLOSED_KEY,
            (h, *key),
        ).fetchone()

    def _on_source(self, ev):
        corr, flow, source = ev[E_CORR], ev[E_FLOW], ev[E_SOURCE]
        changed_at = ev[E_CHANGED]
        dests = self._destinations(flow, source)
        if ev[E_DEST] and ev[E_DEST] not in dests:
            dests = (*dests, ev[E_DEST])
        for dest in dests:
            key = (corr, dest, flow)
            tx = self.pending.get(key)
            if tx is not None:
                # Opened earlier by an attempt (or a redelivery of this source): keep the earliest change time.
                if tx.changed_at is None or changed_at < tx.changed_at:
                    tx.changed_at = changed_at
                    tx.src = (ev[E_TRACE], ev[E_SPAN])
                    if source and tx.labels[1] == UNKNOWN:
                        self._relabel(tx, self._label_tuple(flow, source, dest))
                    self._set_deadline(key, tx, changed_at + self._deadline_of(flow))
                    self._dirty[key] = tx
                continue
            row = self._closed_row(key)
            if row is not None:
                outcome, closed_at, lag, known_changed = row[0], row[1], row[2], row[3]
                if known_changed is not None:
                    continue  # already knew its source: a redelivery
                if outcome == "confirmed":
                    # The confirm arrived first; the lag is known only now.
                    lag = self._observe_lag(flow, source, dest, closed_at - changed_at)
                self.conn.execute(
                    "UPDATE closed_tx SET lag=?, changed_at=?, source=COALESCE(source, ?), source_trace=?, source_span=? "
                    "WHERE " + _CLOSED_KEY,
                    (lag, changed_at, source, ev[E_TRACE], ev[E_SPAN], *_closed_key(key)),
                )
                if self._closed_cache is not None:
                    self._closed_cache[key] = (outcome, closed_at, lag, changed_at, row[4], row[5])
                continue
            self._dirty[key] = self._open(
                key, self._label_tuple(flow, source, dest), changed_at, ev[E_RECEIVED], flow, (ev[E_TRACE], ev[E_SPAN])
            )

    def _on_attempt(self, ev):
        corr, flow, dest = ev[E_CORR], ev[E_FLOW], ev[E_DEST]
        key = (corr, dest, flow)
        span_hex = ev[E_SPAN].hex()
        tx = self.pending.get(key)
        if tx is None:
            row = self._closed_row(key)
            if row is not None:
                self._late_attempt(ev, key, span_hex, row)
                return
            # Attempt before its source span: open now, deadline provisional until the source arrives.
            tx = self._open(key, self._label_tuple(flow, ev[E_SOURCE], dest), ev[E_CHANGED], ev[E_START], flow)
        attempts = tx.attempts
        index = None
        if attempts is None:
            attempts = tx.attempts = []
        elif len(attempts) <= INDEX_ATTEMPTS:
            for a in attempts:
                if a[A_SPAN] == span_hex:
                    return  # the same span delivered again
        else:
            index = self._index.get(key)
            if index is None:
                index = self._index[key] = AttemptIndex(attempts)
            if span_hex in index.spans:
                return
        n = ev[E_ATTEMPT]
        if n is None:
            n = (index.max_n if index is not None else max([a[A_N] for a in attempts])) + 1 if attempts else 1
        if n > 1:
            if index is not None:
                prev_end = index.end_of.get(n - 1)
            else:
                prev_end = next((a[A_END] for a in reversed(attempts) if a[A_N] == n - 1), None)
            if prev_end is not None:
                self._backoff(flow, dest, n, ev[E_START] - prev_end)
        entry = [ev[E_TRACE].hex(), span_hex, ev[E_START], ev[E_END], n, ev[E_CODE], ev[E_ERROR]]
        attempts.append(entry)
        if index is not None:
            index.add(entry)
        if len(attempts) > self.max_attempts:
            # A retry storm on one transaction: keep the first attempts and the latest, count the rest.
            dropped = attempts.pop(TIMELINE_HEAD)
            if index is not None:
                index.spans.discard(dropped[A_SPAN])
            self._omitted[key] = self._omitted.get(key, 0) + 1
        self._dirty[key] = tx
        self._count_attempt(flow, dest, ev[E_CODE], n)

    def _late_attempt(self, ev, key, span_hex, row):
        """An attempt that arrives after its transaction closed (e.g. a retry racing the confirm)."""
        doc = orjson.loads(row[5]) if row[5] else {"attempts": []}
        attempts = doc.setdefault("attempts", [])
        if any(a[A_SPAN] == span_hex for a in attempts):
            return
        n = ev[E_ATTEMPT] or max((a[A_N] for a in attempts), default=0) + 1
        attempts.append([ev[E_TRACE].hex(), span_hex, ev[E_START], ev[E_END], n, ev[E_CODE], ev[E_ERROR]])
        if len(attempts) > self.max_attempts:
            attempts.pop(TIMELINE_HEAD)
            doc["omitted"] = doc.get("omitted", 0) + 1
        self.conn.execute(
            "UPDATE closed_tx SET attempts=attempts+1, timeline=? WHERE " + _CLOSED_KEY,
            (_to_json(doc), *_closed_key(key)),
        )
        self._count_attempt(key[2], key[1], ev[E_CODE], n)

    def _count_attempt(self, flow, dest, code, n):
        deltas, delta = self._deltas, (self.metrics.attempts, (flow, dest, code))  # _inc, inlined
        deltas[delta] = deltas.get(delta, 0) + 1
        if n > 1:
            self._inc(self.metrics.retries, (flow, dest))

    def _backoff(self, flow, dest, n, backoff):
        if backoff < 0:
            return  # overlapping attempts (clock skew between hosts): no meaningful backoff
        self._observe(self.metrics.retry_backoff, (flow, dest), backoff)
        self._backoffs.append(((flow, dest), min(n, JITTER_MAX_N), backoff))

    def _on_confirm(self, ev):
        corr, flow, dest = ev[E_CORR], ev[E_FLOW], ev[E_DEST]
        key = (corr, dest, flow)
        tx = self.pending.get(key)
        row = None if tx is not None else self._closed_row(key)
        if row is not None and row[4] == ev[E_SPAN]:
            return  # redelivery of the very span that closed it
        idem = ev[E_IDEM]
        if idem is not None:
            duplicate = self._apply(idem, key, ev)
        else:
            # Default key (correlation ID + destination): a confirm of an already confirmed transaction.
            duplicate = row is not None and row[0] == "confirmed"
            if duplicate:
                self._apply(f"{corr}\x1f{dest}", key, ev, first_count=2)
        if duplicate:
            self._record_duplicate(key, ev, row)
            return
        if row is not None and row[0] == "confirmed":
            return  # confirmed under another idempotency key: the transaction is already closed
        if tx is not None:
            changed_at = tx.changed_at if tx.changed_at is not None else ev[E_CHANGED]
            source = tx.labels[1] if tx.labels[1] != UNKNOWN else ev[E_SOURCE]
        else:
            changed_at = ev[E_CHANGED]
            if changed_at is None and row is not None:
                changed_at = row[3]
            source = ev[E_SOURCE]
        lag = None
        if changed_at is not None:
            lag = self._observe_lag(flow, source, dest, ev[E_END] - changed_at)
        self._close(key, tx, "confirmed", ev, changed_at, lag, source, row)

    def _apply(self, idem, key, ev, first_count=1) -> bool:
        """Count one apply of an idempotency key; True when it had been applied before (a duplicate)."""
        corr, dest, flow = key
        span = ev[E_SPAN]
        row = self.conn.execute(
            "SELECT first_span, last_span FROM applies WHERE idem=? AND dest=? AND flow=?", (idem, dest, flow)
        ).fetchone()
        if row is None:
            self.conn.execute(
                "INSERT INTO applies (idem, corr, dest, flow, first_at, last_at, applies, first_span, last_span) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (idem, corr, dest, flow, ev[E_END], ev[E_END], first_count, span, span),
            )
            return first_count > 1
        if span in row:
            return False  # a redelivery of a span already counted
        self.conn.execute(
            "UPDATE applies SET applies=applies+1, last_at=?, last_span=? WHERE idem=? AND dest=? AND flow=?",
            (ev[E_END], span, idem, dest, flow),
        )
        return True

    def _record_duplicate(self, key, ev, row):
        _corr, dest, flow = key
        if self._exactly_once(flow):
            self._inc(self.metrics.duplicate_applies, (flow, dest))
        entry = [ev[E_TRACE].hex(), ev[E_SPAN].hex(), ev[E_START], ev[E_END], ev[E_IDEM]]
        if row is None:
            row = self._closed_row(key)
        if row is None:
            return
        doc = orjson.loads(row[5]) if row[5] else {"attempts": []}
        duplicates = doc.setdefault("duplicates", [])
        if len(duplicates) < MAX_DUPLICATES:
            duplicates.append(entry)
        else:
            doc["duplicates_omitted"] = doc.get("duplicates_omitted", 0) + 1
        timeline = _to_json(doc)
        batch_row = self._batch_closed.get(key)
        if batch_row is not None:
            # Closed earlier in this batch and not written yet: the duplicate goes into the row to write.
            self._batch_closed[key] = (*batch_row[:5], timeline)
            if key in self._close_new:
                self._close_new[key] = (*self._close_new[key][:14], timeline, self._close_new[key][15])
            elif key in self._close_stored:
                stored = self._close_stored[key]
                self._close_stored[key] = (*stored[:7], timeline, *stored[8:])
            return
        self.conn.execute("UPDATE closed_tx SET timeline=? WHERE " + _CLOSED_KEY, (timeline, *_closed_key(key)))

    def _on_fail(self, ev):
        corr, flow, dest = ev[E_CORR], ev[E_FLOW], ev[E_DEST]
        key = (corr, dest, flow)
        tx = self.pending.get(key)
        row = None
        if tx is None:
            row = self._closed_row(key)
            if row is not None:
                return  # already confirmed or failed: a late or redelivered fail changes nothing
            changed_at, source = ev[E_CHANGED], ev[E_SOURCE]
        else:
            changed_at, source = tx.changed_at, (tx.labels[1] if tx.labels[1] != UNKNOWN else ev[E_SOURCE])
        self._close(key, tx, "failed", ev, changed_at, None, source, row)

    def _observe_lag(self, flow, source, dest, lag):
        if lag < 0:
            # Source and destination clocks disagree; a negative lag is meaningless.
            self._inc(self.metrics.clock_skew, (flow,))
            lag = 0.0
        self._observe(self.metrics.sync_lag, (flow, source or UNKNOWN, dest), lag)
        return lag

    def _close(self, key, tx, outcome, ev, changed_at, lag, source, row=None):
        """Close a transaction. `ev` is the closing span (None when it expires)."""
        corr, dest, flow = key
        if ev is not None:
            closed_at, close_span = ev[E_END], ev[E_SPAN]
            close = [ev[E_STAGE], ev[E_TRACE].hex(), ev[E_SPAN].hex(), ev[E_START], ev[E_END], ev[E_ERROR], ev[E_IDEM]]
        else:
            closed_at, close_span, close = self.clock(), None, None
        attempts = 0
        h = corr_hash(corr)
        self.closed_keys.add(h)
        if key in self._batch_closed:
            # Closed earlier in this batch (a fail, then its confirm): this close replaces that one.
            self._close_new.pop(key, None)
            self._close_stored.pop(key, None)
        elif row is not None:
            self._closed_deletes.append((h, *key))
        if tx is not None:
            del self.pending[key]
            self._dirty.pop(key, None)
            attempts = len(tx.attempts) if tx.attempts else 0
            omitted = 0
            if attempts > INDEX_ATTEMPTS:
                self._index.pop(key, None)
                omitted = self._omitted.pop(key, 0)
                attempts += omitted
            deltas, delta = self._deltas, (self.metrics.pending, tx.labels)  # _inc, inlined on the hot path
            deltas[delta] = deltas.get(delta, 0) - 1
            if tx.overdue:
                self._inc(self.metrics.overdue, tx.labels, -1)
            labels = tx.labels
            timeline = tx.timeline(close, omitted)
            if tx.stored:
                self._close_stored[key] = (
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
                self._deletes.append(key)
            else:
                src = tx.src or (None, None)
                self._close_new[key] = (
                    *key,
                    source,
                    outcome,
                    changed_at,
                    tx.opened_at,
                    tx.deadline,
                    closed_at,
                    lag,
                    src[0],
                    src[1],
                    close_span,
                    attempts,
                    timeline,
                    h,
                )
        else:
            labels = self._label_tuple(flow, source, dest)
            if row is not None and row[5]:  # e.g. a confirm after a fail: keep the attempts already recorded
                doc = orjson.loads(row[5])
                attempts = len(doc.get("attempts", ())) + doc.get("omitted", 0)
                doc["close"] = close
                timeline = _to_json(doc)
            else:
                timeline = _to_json({"attempts": [], "close": close}) if close else None
            self._close_new[key] = (
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
        self._batch_closed[key] = (outcome, closed_at, lag, changed_at, close_span, timeline)
        deltas, delta = self._deltas, (self.metrics.transactions, (*labels, outcome))
        deltas[delta] = deltas.get(delta, 0) + 1
        if attempts:
            self._observe(self.metrics.delivery_attempts, (flow, dest), attempts)

    def _relabel(self, tx, labels):
        m = self.metrics
        self._inc(m.pending, tx.labels, -1)
        self._inc(m.pending, labels)
        if tx.overdue:
            self._inc(m.overdue, tx.labels, -1)
            self._inc(m.overdue, labels)
        tx.labels = labels

    def _set_deadline(self, key, tx, deadline):
        tx.deadline = deadline
        heapq.heappush(self._heap, (deadline, CHECK_OVERDUE, key))
        if tx.overdue and deadline > self.clock():
            tx.overdue = False  # the provisional deadline was too early
            self._inc(self.metrics.overdue, tx.labels, -1)

    def _flush(self):
        # Deadlines of the transactions this batch opened and did not close. Most open and close
        # within a batch; their entries would only sit in the heap, stale, until their deadline.
        pending, heap = self.pending, self._heap
        for key in self._opened:
            tx = pending.get(key)
            if tx is not None:
                heapq.heappush(heap, (tx.deadline, CHECK_OVERDUE, key))
        conn = self.conn
        if self._closed_deletes:
            conn.executemany("DELETE FROM closed_tx WHERE " + _CLOSED_KEY, self._closed_deletes)
        if self._close_stored:
            conn.executemany(_CLOSE_STORED, self._close_stored.values())
        if self._deletes:
            conn.executemany("DELETE FROM open_tx WHERE corr=? AND dest=? AND flow=?", self._deletes)
        if self._close_new:
            conn.executemany(_CLOSE_NEW, self._close_new.values())
        if self._dirty:
            rows = []
            omitted = self._omitted
            for key, tx in self._dirty.items():
                src = tx.src or (None, None)
                n_omitted = omitted.get(key, 0) if omitted else 0
                rows.append(
                    (
                        *key,
                        tx.labels[1] if tx.labels[1] != UNKNOWN else None,
                        tx.changed_at,
                        tx.opened_at,
                        tx.deadline,
                        src[0],
                        src[1],
                        (len(tx.attempts) if tx.attempts else 0) + n_omitted,
                        tx.timeline(None, n_omitted),
                    )
                )
                tx.stored = True
                tx.src = None  # written; memory need not keep it
            conn.executemany(_UPSERT_OPEN, rows)

    def _update_jitter(self):
        gauge = self.metrics.retry_jitter
        for fd, n, backoff in self._backoffs:
            fd = self._metric_labels(gauge, fd)  # windows per metric series, so they stay bounded
            self._jitter[(*fd, n)].append(backoff)
            self._jitter_dirty.add(fd)
        self._backoffs.clear()
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
        if self._stale:
            self._reset_memory()
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
                self._inc(m.overdue, tx.labels)
                base = tx.changed_at if tx.changed_at is not None else tx.opened_at
                heapq.heappush(heap, (max(base + self.expire_after, when), CHECK_EXPIRE, key))
            elif tx.overdue:
                expired.append(key)
        self._apply_metrics()
        if expired:
            self._expire(expired, now)
            self._apply_metrics()
        if now - self._last_sweep >= 60:
            self._last_sweep = now
            self._sweep(now)

    def _expire(self, keys, now):
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            # Another process holds the write lock (or the disk fails): nothing changed, try again next tick.
            for key in keys:
                heapq.heappush(self._heap, (now, CHECK_EXPIRE, key))
            raise
        try:
            self._new_batch()
            for key in keys:
                tx = self.pending[key]
                self._close(
                    key, tx, "expired", None, tx.changed_at, None, tx.labels[1] if tx.labels[1] != UNKNOWN else None
                )
            self._flush()
            self.conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _sweep(self, now):
        """Forget closed transactions older than the expiry horizon, in small batches."""
        cutoff = now - self.expire_after
        conn = self.conn
        for sql in (
            # closed_tx rows are appended as transactions close: look at the oldest few thousand
            # only (no index on closed_at to keep up to date) and delete those past the horizon.
            f"DELETE FROM closed_tx WHERE rowid IN (SELECT rowid FROM (SELECT rowid, closed_at FROM closed_tx "
            f"ORDER BY rowid LIMIT {SWEEP_BATCH}) WHERE closed_at < ?)",
            f"DELETE FROM applies WHERE (idem, dest, flow) IN (SELECT idem, dest, flow FROM applies WHERE last_at < ? "
            f"LIMIT {SWEEP_BATCH})",
        ):
            try:
                for _ in range(SWEEP_ROUNDS):  # bounded, so the writer is back to intake quickly
                    if conn.execute(sql, (cutoff,)).rowcount == 0:
                        break
            except sqlite3.Error:
                # Sweeping loses nothing when it fails; it only delays clean-up until the next minute.
                log.exception("ledger sweep failed; will retry in a minute")

    def _rollback(self):
        """After a failed write: roll back if SQLite has not already (a failed COMMIT, e.g. SQLITE_FULL,
        rolls back by itself) and rebuild memory from what is committed. Memory was ahead of the
        database; keeping it would make a retry of the same spans look already recorded."""
        self._stale = True
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.error("ledger rollback failed: %s", exc)
        try:
            self._reset_memory()
        except Exception as exc:  # e.g. the disk is unreadable too: try again before the next write
            log.error("ledger: rebuilding memory after a failed write failed (will retry): %s", exc)

    def _reset_memory(self):
        self._new_batch()
        self._deltas.clear()
        self._obs.clear()
        self._backoffs.clear()
        m = self.metrics
        for (metric_id, _), child in self._child_cache.items():
            if metric_id in (id(m.pending), id(m.overdue)):
                child.set(0)
        self.pending.clear()
        self._omitted.clear()
        self._index.clear()
        self._heap.clear()
        self.closed_keys = ClosedKeys()
        self.load()
        self._stale = False  # overdue marks come back at the next tick: deadlines are on the heap again

    def close(self):
        self.conn.close()


def _start_time(ev):
    return ev[E_START]
