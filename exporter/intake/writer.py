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
from typing import TYPE_CHECKING, cast

from syncwatch.config.errors import SyncwatchError
from syncwatch.intake.extract import SpanExtractor
from syncwatch.ledger.checkpoint import WalCheckpointer
from syncwatch.ledger.store import StoreBusy
from syncwatch.ledger.transitions import Ledger
from syncwatch.metrics.registry import Metrics

if TYPE_CHECKING:  # psycopg is imported only for PostgreSQL
    from syncwatch.ledger.lease import Lease
    from syncwatch.ledger.postgres_store import PostgresStore

log = logging.getLogger("syncwatch.intake")

TICK_SECONDS = 0.25  # overdue detection granularity (the promise is: visible within 2 s)


class IntakeFull(SyncwatchError):
    pass


class ExtractionFailed(SyncwatchError):
    """A bug in syncwatch, not in the request: answered 500 and counted, never retried as a 503."""


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
        # Replicas: without a lease (SQLite, or PostgreSQL for one process) this writer always leads.
        self.lease = lease
        self._pg: PostgresStore | None = None
        if lease is not None:
            self._pg = cast("PostgresStore", ledger.store)  # App makes a lease only for PostgreSQL
        self._epoch: int | None = None  # the lease term this writer leads in
        self.leading = lease is None
        self._handoff_rows = 0  # handed-off batches known to wait (the leader drains while > 0)
        metrics.leader.set(1 if self.leading else 0)

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
            self.sync_role()
            batch, n = [], 0
            with self._cv:
                if not self._queue and not self._stopping and not (self.leading and self._handoff_rows):
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
            elif self.leading and self._handoff_rows:
                self._drain()
            self.metrics.intake_queue.set(self._queued_spans)
            now = self.clock()
            if now - last_tick >= TICK_SECONDS:
                last_tick = now
                self._tick(now)
            if stopping and not batch:
                return

    def _tick(self, now: float) -> None:
        if self.leading:
            try:
                self.ledger.tick(now)
                self.tick_ok = True
            except StoreBusy:
                self._lost_term()
            except Exception as exc:  # overdue transactions would go unseen: fail readiness, loudly
                log.exception("ledger tick failed")
                self.tick_ok, self.last_error = False, f"deadline tracking failed: {exc}"
        if self._pg is None:
            return
        if not self.commit_ok and self._pg.writable():
            self.commit_ok, self.last_error = True, None  # idle: readiness comes back with the database
        if self.leading:
            try:
                self._handoff_rows, spans = self._pg.handoff_waiting()
            except Exception as exc:
                if self.commit_ok:  # while the database is away, the failed batches say so already
                    log.error("reading the handoff backlog failed: %s", exc)
                return
            self.metrics.handoff_backlog.set(spans)

    # ---- replicas ------------------------------------------------------------------------------
    def sync_role(self) -> None:
        """Follow the lease: take over the ledger when this replica's term begins, let go of it when
        the term ends. Runs on the writer thread (and once in App.start, before it starts)."""
        if self.lease is None:
            return
        epoch = self.lease.epoch()
        if epoch == self._epoch:
            return
        assert self._pg is not None  # set with the lease
        if self._epoch is not None:
            self._stand_down()
        if epoch is None:
            return
        self._pg.fence = (self.lease.holder, epoch)
        started = time.perf_counter()
        try:
            loaded = self.ledger.take_over()
        except Exception as exc:  # the database went away again: try at the next pass
            log.error("taking over the ledger failed (will retry): %s", exc)
            self._pg.fence = None
            self.ledger.stand_down()
            return
        self._epoch, self.leading, self._handoff_rows = epoch, True, 1  # drain at once
        self.metrics.leader.set(1)
        self.metrics.leader_changes.labels("acquired").inc()
        log.info(
            "leading the ledger (epoch %d): %d open transactions loaded in %.2fs",
            epoch,
            loaded,
            time.perf_counter() - started,
        )

    def _stand_down(self) -> None:
        assert self._pg is not None
        self._pg.fence = None
        self.ledger.stand_down()
        self._epoch, self.leading, self._handoff_rows = None, False, 0
        self.tick_ok = True  # a follower tracks no deadlines
        self.metrics.leader.set(0)
        self.metrics.handoff_backlog.set(0)
        self.metrics.leader_changes.labels("lost").inc()
        log.warning("no longer leading the ledger: handing spans off to the leader")

    def _lost_term(self) -> None:
        """A fence check failed: another replica leads; this one writes nothing more as leader."""
        assert self.lease is not None
        if self._epoch is not None:
            self.lease.give_up(self._epoch)
        self.sync_role()

    def _apply(self, events: list) -> None:
        """The leader records its own events and the handed-off ones, in one transaction."""
        pg = self._pg
        if pg is None or not self._handoff_rows:
            self.ledger.record(events)
            return
        self.ledger.record(events, pg.drain_handoff)
        # A full drain may have left more behind; the next tick counts them again.
        self._handoff_rows = 1 if pg.handoff_more else max(0, self._handoff_rows - pg.drained_rows)

    def _drain(self) -> None:
        """Idle leader: apply only what other replicas handed off."""
        try:
            self._apply([])
            self.commit_ok, self.last_error = True, None
        except StoreBusy:
            self._lost_term()
        except Exception as exc:  # the next tick counts the backlog again and retries
            log.error("applying handed-off spans failed: %s", exc)
            self.commit_ok, self.last_error, self._handoff_rows = False, str(exc), 0

    def _write(self, events: list) -> None:
        """Record (leader) or hand off (follower) one batch; raises when it is not durable."""
        if not self.leading:
            assert self._pg is not None  # a writer without a lease always leads
            self._pg.hand_off(events)
            return
        try:
            self._apply(events)
        except StoreBusy:
            self._lost_term()
            self._write(events)  # now as a follower

    def _record(self, batch) -> None:
        events, results, record_ids = [], [], []
        received = self.clock()
        for request, _, _, _ in batch:
            try:
                out = self.extractor.extract(request, received)
            except Exception as exc:  # a bug in extraction must fail this request, not the batch
                log.exception("span extraction failed")
                results.append(ExtractionFailed(f"{type(exc).__name__}: {exc}"))
                continue
            events.extend(out.events)
            results.append(out)
            record_ids.extend(out.record_ids)
        started = time.perf_counter()
        error = None
        if events:
            try:
                self._write(events)
                self.commit_ok, self.last_error = True, None
            except Exception as exc:  # disk full, I/O error: the senders get 503 and retry
                log.error("ledger write failed for %d spans: %s", len(events), exc)
                self.commit_ok, self.last_error = False, str(exc)
                error = exc
            self.metrics.ledger_commit.observe(time.perf_counter() - started)
        if record_ids and error is None and self.record_ids_sink is not None:
            self.record_ids_sink(record_ids)
        for (_, _, future, loop), result in zip(batch, results, strict=False):
            loop.call_soon_threadsafe(_resolve, future, error if error is not None else result)


def _resolve(future: asyncio.Future, result) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
