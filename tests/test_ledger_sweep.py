"""What the ledger forgets, and when. Closed transactions go after the expiry horizon
(storage.expire_after), in bounded rounds from the oldest rows, and a row with a skewed future close
time does not hold others back; deadlines of transactions that closed within their batch never stay."""

from __future__ import annotations

import os
import sqlite3

from syncwatch.config.models import Config
from syncwatch.ledger.records import Event
from syncwatch.ledger.schema import STAGE_CONFIRM
from syncwatch.ledger.sqlite_store import SWEEP_BATCH
from syncwatch.ledger.transitions import Ledger
from syncwatch.metrics.registry import Metrics

DAY = 86400.0
T0 = 1_790_000_000.0


def confirm(corr: str, at: float) -> Event:
    return Event(
        os.urandom(16),
        os.urandom(8),
        corr,
        "orders",
        STAGE_CONFIRM,
        "storefront",
        "erp",
        at - 1,
        at,
        at - 5,
        None,
        None,
        None,
        None,
        at,
    )


def test_sweep_forgets_only_what_is_past_the_horizon(tmp_path):
    now = [T0]
    config = Config.model_validate({"storage": {"data_dir": str(tmp_path)}})
    ledger = Ledger(config, Metrics(), clock=lambda: now[0])
    ledger.record([confirm("old-1", T0)])
    ledger.record([confirm("skewed", T0 + 8 * DAY)])  # a host whose clock runs 8 days ahead
    ledger.record([confirm(f"old-bulk-{i}", T0 + 1) for i in range(2 * SWEEP_BATCH + 10)])
    ledger.record([confirm("recent", T0 + 6 * DAY)])

    now[0] = T0 + config.storage.expire_after + 10
    ledger.tick(now[0])

    db = sqlite3.connect(config.storage.ledger_path)
    left = sorted(r[0] for r in db.execute("SELECT corr FROM closed_tx"))
    db.close()
    ledger.close()
    assert left == ["recent", "skewed"]


def source(corr: str, at: float) -> Event:
    return Event(
        os.urandom(16),
        os.urandom(8),
        corr,
        "orders",
        0,
        "storefront",
        None,
        at,
        at,
        at,
        None,
        None,
        None,
        None,
        at,
    )


def test_transactions_closed_within_a_batch_leave_no_deadline_behind(tmp_path):
    """At tens of thousands of transactions a second, deadlines of transactions that closed within
    their batch would otherwise pile up in memory for a whole deadline period."""
    config = Config.model_validate(
        {"storage": {"data_dir": str(tmp_path)}, "flows": {"orders": {"destinations": ["erp"], "deadline": "15m"}}}
    )
    ledger = Ledger(config, Metrics(), clock=lambda: T0)
    ledger.record([ev for i in range(1000) for ev in (source(f"o-{i}", T0), confirm(f"o-{i}", T0 + 2))])
    assert len(ledger.pending) == 0 and len(ledger._heap) == 0
    ledger.record([source(f"late-{i}", T0) for i in range(10)])
    assert len(ledger.pending) == 10 and len(ledger._heap) == 10
    ledger.tick(T0 + 15 * 60 + 1)
    assert sum(tx.overdue for tx in ledger.pending.values()) == 10
    ledger.close()
