"""The part the ledger writer plays among replicas on one PostgreSQL ledger, following the lease
(ledger/lease.py): the leader holds the ledger in memory and applies its own batches and those the
followers handed off; a follower hands its batches off and holds no ledger. Without a lease
(SQLite, or PostgreSQL in one process) the writer always leads.

Everything here runs on the writer thread (and once in App.start, before that thread starts).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, cast

from syncwatch.ledger.records import Event
from syncwatch.ledger.store import StoreBusy
from syncwatch.ledger.transitions import Ledger
from syncwatch.metrics.registry import Metrics

if TYPE_CHECKING:  # psycopg is imported only for PostgreSQL
    from syncwatch.ledger.lease import Lease
    from syncwatch.ledger.postgres_store import PostgresStore

log = logging.getLogger("syncwatch.intake")


def _name(exc: BaseException) -> str:
    """What failed, without the message: a database's or a bug's message may quote span data."""
    return type(exc).__name__


class ReplicaRole:
    def __init__(self, ledger: Ledger, metrics: Metrics, lease: Lease | None):
        self.ledger = ledger
        self.metrics = metrics
        self.lease = lease
        self.pg: PostgresStore | None = None
        if lease is not None:
            self.pg = cast("PostgresStore", ledger.store)  # App makes a lease only for PostgreSQL
        self.leading = lease is None
        self._epoch: int | None = None  # the lease term this replica leads in
        self._handoff_rows = 0  # handed-off batches known to wait (the leader drains while > 0)
        metrics.leader.set(1 if self.leading else 0)

    @property
    def handoff_waiting(self) -> bool:
        """The leader knows of handed-off batches to apply."""
        return self.leading and self._handoff_rows > 0

    # ---- following the lease -------------------------------------------------------------------
    def sync(self) -> None:
        """Take over the ledger when this replica's term begins, let go of it when the term ends."""
        if self.lease is None:
            return
        epoch = self.lease.epoch()
        if epoch == self._epoch:
            return
        assert self.pg is not None  # set with the lease
        if self._epoch is not None:
            self._stand_down()
        if epoch is None:
            return
        self.pg.fence = (self.lease.holder, epoch)
        started = time.perf_counter()
        try:
            loaded = self.ledger.take_over()
        except Exception as exc:  # the database went away again: try at the next pass
            log.error("taking over the ledger failed (will retry): %s", exc)
            self.pg.fence = None
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
        assert self.pg is not None
        self.pg.fence = None
        self.ledger.stand_down()
        self._epoch, self.leading, self._handoff_rows = None, False, 0
        self.metrics.leader.set(0)
        self.metrics.handoff_backlog.set(0)
        self.metrics.leader_changes.labels("lost").inc()
        log.warning("no longer leading the ledger: handing spans off to the leader")

    def lost_term(self) -> None:
        """A fence check failed: another replica leads; this one writes nothing more as leader."""
        assert self.lease is not None  # without a lease there is no fence to fail
        if self._epoch is not None:
            self.lease.give_up(self._epoch)
        self.sync()

    # ---- writing -------------------------------------------------------------------------------
    def write(self, events: list[Event], drain: bool = True) -> None:
        """Record (leader) or hand off (follower) one batch; raises when it is not durable.
        drain=False: the leader applies no handed-off batches with it (the writer's one-by-one
        retry after a failure that was not the store's, which must not carry others' spans along)."""
        if not self.leading:
            assert self.pg is not None  # without a lease this replica always leads
            self.pg.hand_off(events)
            return
        try:
            self._apply(events, drain)
        except StoreBusy:
            self.lost_term()
            self.write(events, drain)  # now as a follower

    def drain(self) -> None:
        """Idle leader: apply only what other replicas handed off; raises when it could not."""
        try:
            self._apply([])
        except StoreBusy:
            self.lost_term()
        except Exception:
            self._handoff_rows = 0  # the next backlog count retries
            raise

    def _apply(self, events: list[Event], drain: bool = True) -> None:
        """The leader records its own events and the handed-off ones, in one transaction."""
        pg = self.pg
        if pg is None or not self._handoff_rows or not drain:
            self.ledger.record(events)
            return
        pg.drained_ids = []  # set by the drain: a failure before it is not the rows' doing
        try:
            self.ledger.record(events, pg.drain_handoff)
        except Exception as exc:
            if pg.transient(exc) or not pg.drained_ids:
                raise
            self._isolate(events, pg.drained_ids, exc)
            return
        self._count_rejected(pg.rejected_spans)
        # A full drain may have left more behind; the next count finds them again.
        self._handoff_rows = 1 if pg.handoff_more else max(0, self._handoff_rows - pg.drained_rows)

    def _isolate(self, events: list[Event], rows: list[int], exc: Exception) -> None:
        """A transaction with handed-off rows failed on its data (the database refused a value, a
        bug in applying them): apply those rows one at a time, move the one that fails aside (kept in
        handoff_rejected, counted), so it cannot fail every later transaction; then our own events."""
        assert self.pg is not None
        pg = self.pg
        log.error("applying %d handed-off batches failed (%s): applying them one at a time", len(rows), _name(exc))
        saved, pg.drain_rows = pg.drain_rows, 1
        try:
            for row_id in rows:
                try:
                    self.ledger.record([], pg.drain_handoff)
                    self._count_rejected(pg.rejected_spans)
                except Exception as row_exc:
                    if pg.transient(row_exc) or pg.drained_ids != [row_id]:
                        raise
                    spans = pg.reject_handoff(row_id, _name(row_exc))
                    self._count_rejected(spans)
                    log.error(
                        "handoff row %d (%d spans) cannot be applied (%s): moved to handoff_rejected, "
                        'counted in syncwatch_dropped_total{reason="handoff_rejected"}',
                        row_id,
                        spans,
                        _name(row_exc),
                    )
        finally:
            pg.drain_rows = saved
        self._handoff_rows = 1  # the next count finds what else waits
        if events:
            self.ledger.record(events)  # raises when our own batch is what fails: answered 503

    def _count_rejected(self, spans: int) -> None:
        if spans:  # committed: the rows are in handoff_rejected now
            self.metrics.dropped.labels("handoff_rejected").inc(spans)
            assert self.pg is not None
            self.pg.rejected_spans = 0

    def count_backlog(self) -> None:
        """On the leader: how much waits in the handoff table (the gauge and the next drain)."""
        if self.pg is None or not self.leading:
            return
        self._handoff_rows, spans = self.pg.handoff_waiting()
        self.metrics.handoff_backlog.set(spans)
