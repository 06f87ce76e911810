"""The intake queue and the ledger writer thread (group commit).

Receivers parse requests on the event loop and hand them here; one writer thread drains the
queue, extracts the stage spans, records many requests in one SQLite transaction, and only then
resolves each request's future, so a success answer always means "durably recorded". A full queue is refused at once
(the receiver answers 503 + Retry-After) instead of growing without bound.

Replicas on one PostgreSQL ledger (a Lease): the leader records as above and also applies the
batches the others handed off; a follower writes its batches to the handoff table instead (durable
there before the answer) and holds no ledger in memory, runs no ticks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from syncwatch.config.errors import SyncwatchError
from syncwatch.intake.extract import SpanExtractor
from syncwatch.intake.replica import ReplicaRole
from syncwatch.ledger.checkpoint import WalCheckpointer
from syncwatch.ledger.store import StoreBusy, is_store_failure
from syncwatch.ledger.transitions import Ledger
from syncwatch.metrics.registry import Metrics

if TYPE_CHECKING:  # psycopg is imported only for PostgreSQL
    from syncwatch.ledger.lease import Lease

log = logging.getLogger("syncwatch.intake")

TICK_SECONDS = 0.25  # overdue detection granularity (the promise is: visible within 2 s)
MAX_BUGS_LOGGED = 100  # distinct write failures remembered as logged (beyond: logged every time)
# Replicas: an idle writer asks the database this often whether it still takes writes, so /readyz
# says so without traffic too (a failed write says it at once).
IDLE_PROBE_SECONDS = 1.0


class IntakeFull(SyncwatchError):
    pass


class ExtractionFailed(SyncwatchError):
    """A bug in syncwatch, not in the request: answered 500 and counted, never retried as a 503."""


class LedgerFailed(SyncwatchError):
    """Recording this request failed for a reason that is not the store's (a bug in syncwatch, which
    a retry would repeat): answered 500 and counted; the other requests of its batch are recorded."""


class LedgerWriter:
    def __init__(
        self,
        ledger: Ledger,
        extractor: SpanExtractor,
        metrics: Metrics,
        max_queued_spans: int,
        max_batch_spans: int,
        clock=time.time,
        lease: Lease | None = None,
    ):
        self.ledger = ledger
        self.extractor = extractor
        self.metrics = metrics
        self.max_queued = max_queued_spans
        self.max_batch = max_batch_spans
        self.clock = clock
        self._queue: deque = deque()
        self._queued_spans = 0
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        sqlite = ledger.config.storage.backend == "sqlite"  # PostgreSQL checkpoints itself
        self._checkpointer = WalCheckpointer(ledger.config.storage.ledger_path) if sqlite else None
        # Destination record IDs of confirm spans, handed on once committed (the payload audits).
        self.record_ids_sink: Callable[[list], None] | None = None
        self.commit_ok = True  # False while the last commit failed
        self.tick_ok = True  # False while marking overdue/expired fails
        self.last_error: str | None = None
        self._bugs_logged: set[tuple] = set()  # write failures not the store's, logged with traceback
        self.role = ReplicaRole(ledger, metrics, lease)
        self._written_at = time.monotonic()  # the last successful write or probe (replicas)

    @property
    def leading(self) -> bool:
        """This replica leads the ledger (always, without a lease)."""
        return self.role.leading

    def sync_role(self) -> None:
        self.role.sync()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="syncwatch-ledger-writer", daemon=True)
        self._thread.start()
        if self._checkpointer is not None:
            self._checkpointer.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._checkpointer is not None:
            self._checkpointer.stop()

    @property
    def healthy(self) -> bool:
        """Readiness: the ledger records spans and tracks deadlines."""
        return self.commit_ok and self.tick_ok

    @property
    def queued_spans(self) -> int:
        return self._queued_spans

    def submit(self, request, n_spans: int) -> asyncio.Future:
        """Queue a parsed OTLP trace request. The writer thread extracts its events and records
        them; the future resolves with the extraction result once they are committed.

        Extraction runs on the writer thread, not the event loop: one thread does all the CPU work
        of intake, instead of two threads handing the GIL back and forth on every SQLite call."""
        loop = asyncio.get_running_loop()
        with self._cv:
            # Always admit into an empty queue, so a single request larger than the limit still goes through.
            if self._queued_spans and self._queued_spans + n_spans > self.max_queued:
                raise IntakeFull()
            future = loop.create_future()
            self._queue.append((request, n_spans, future, loop))
            self._queued_spans += n_spans
            self._cv.notify()
        return future

    def _run(self) -> None:
        last_tick = 0.0
        while True:
            self.role.sync()
            batch, n = [], 0
            with self._cv:
                if not self._queue and not self._stopping and not self.role.handoff_waiting:
                    self._cv.wait(timeout=TICK_SECONDS)
                while self._queue and (n == 0 or n + self._queue[0][1] <= self.max_batch):
                    item = self._queue.popleft()
                    batch.append(item)
                    n += item[1]
                stopping = self._stopping and not self._queue
            if batch:
                # Spans count as queued until committed, so a stuck writer fills the queue and senders back off.
                self._record(batch)
                with self._cv:
                    self._queued_spans -= n
            elif self.role.handoff_waiting:
                self._drain()
            self.metrics.intake_queue.set(self._queued_spans)
            now = self.clock()
            if now - last_tick >= TICK_SECONDS:
                last_tick = now
                self._tick(now)
            if stopping and not batch:
                return

    def _tick(self, now: float) -> None:
        role = self.role
        if not role.leading:
            self.tick_ok = True  # a follower tracks no deadlines
        else:
            try:
                self.ledger.tick(now)
                self.tick_ok = True
            except StoreBusy:
                role.lost_term()
            except Exception as exc:  # overdue transactions would go unseen: fail readiness, loudly
                log.exception("ledger tick failed")
                self.tick_ok, self.last_error = False, f"deadline tracking failed: {exc}"
        if role.pg is None:
            return
        if not self.commit_ok:
            if role.pg.writable():
                self.commit_ok, self.last_error = True, None  # idle: readiness comes back with the database
                self._written_at = time.monotonic()
        elif time.monotonic() - self._written_at >= IDLE_PROBE_SECONDS:
            if role.pg.writable():
                self._written_at = time.monotonic()
            else:  # idle through an outage: not ready, as a failed write would say
                self.commit_ok, self.last_error = False, "the database does not answer or takes no writes"
        try:
            role.count_backlog()
        except Exception as exc:
            if self.commit_ok:  # while the database is away, the failed batches say so already
                log.error("reading the handoff backlog failed: %s", exc)

    def _drain(self) -> None:
        try:
            self.role.drain()
            self.commit_ok, self.last_error = True, None
            self._written_at = time.monotonic()
        except Exception as exc:
            log.error("applying handed-off spans failed: %s", exc)
            self.commit_ok, self.last_error = False, str(exc)

    def _record(self, batch) -> None:
        per_request: list[list] = []  # each request's events ([] when extraction failed)
        events, results, record_ids = [], [], []
        received = self.clock()
        for request, _, _, _ in batch:
            try:
                out = self.extractor.extract(request, received)
            except Exception as exc:  # a bug in extraction must fail this request, not the batch
                log.exception("span extraction failed")
                results.append(ExtractionFailed(f"{type(exc).__name__}: {exc}"))
                per_request.append([])
                continue
            events.extend(out.events)
            results.append(out)
            per_request.append(out.events)
            record_ids.extend(out.record_ids)
        started = time.perf_counter()
        error: BaseException | None = None
        if events:
            error = self._write(events)
            if error is not None and not is_store_failure(error):
                # Not the store: one request carries spans the ledger cannot record. Record the
                # requests one by one, so only that one fails.
                self._bug(error)
                error = None
                record_ids = self._record_each(per_request, results)
            self.metrics.ledger_commit.observe(time.perf_counter() - started)
        if record_ids and error is None and self.record_ids_sink is not None:
            self.record_ids_sink(record_ids)
        for (_, _, future, loop), result in zip(batch, results, strict=False):
            loop.call_soon_threadsafe(_resolve, future, error if error is not None else result)

    def _write(self, events: list, drain: bool = True) -> BaseException | None:
        """Write one batch; the error when it was not written. A store failure (disk full, I/O
        error, connection lost: the senders get 503 and retry) fails readiness until a write succeeds."""
        try:
            self.role.write(events, drain)
        except Exception as exc:
            if is_store_failure(exc):
                log.error("ledger write failed for %d spans: %s", len(events), exc)
                self.commit_ok, self.last_error = False, str(exc)
            return exc
        self.commit_ok, self.last_error = True, None
        self._written_at = time.monotonic()
        return None

    def _record_each(self, per_request: list[list], results: list) -> list:
        """After a batch failed for a reason not the store's: each request on its own (without
        handed-off spans); the ones that still fail so get LedgerFailed. Returns the record IDs committed."""
        record_ids: list = []
        for i, events in enumerate(per_request):
            if not events:
                continue
            error = self._write(events, drain=False)
            if error is None:
                record_ids.extend(results[i].record_ids)
            elif is_store_failure(error):
                results[i] = error
            else:
                self._bug(error)
                results[i] = LedgerFailed(type(error).__name__)
        return record_ids

    def _bug(self, exc: BaseException) -> None:
        """Log a failure that is not the store's with its traceback, once per place it comes from
        (the exception's type and the line that raised it); the requests it fails are counted."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = (type(exc).__name__, tb.tb_frame.f_code.co_filename, tb.tb_lineno) if tb else (type(exc).__name__,)
        if where in self._bugs_logged:
            log.debug("ledger write failed again (%s), logged before", type(exc).__name__)
            return
        if len(self._bugs_logged) < MAX_BUGS_LOGGED:
            self._bugs_logged.add(where)
        log.error("ledger write failed, not for a storage reason (a bug in syncwatch)", exc_info=exc)


def _resolve(future: asyncio.Future, result) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
