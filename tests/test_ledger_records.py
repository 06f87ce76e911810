"""The ledger's records and its storage interface, in-process with a fake clock and fresh registries:
timelines keep their stored JSON layout, a capped timeline counts every attempt, and a second backend
written only against store.LedgerStore gives the transitions exactly what SQLite gives them."""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Iterator, Sequence

import ledger_events
import orjson
from ledger_events import T0, closed, ev, run, samples
from prometheus_client import CollectorRegistry

from syncwatch.config.models import Config
from syncwatch.ledger import sqlite_store
from syncwatch.ledger.records import (
    CLOSED_TX_COLUMNS,
    OPEN_TX_COLUMNS,
    STORED_CLOSE_COLUMNS,
    ClosedRow,
    OpenRow,
    TxKey,
)
from syncwatch.ledger.schema import STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_SOURCE, corr_hash
from syncwatch.ledger.store import BatchWrites
from syncwatch.ledger.transitions import Ledger
from syncwatch.metrics.registry import Metrics


def config(tmp_path, **cfg):
    return Config.model_validate(
        {"storage": {"data_dir": str(tmp_path), "expire_after": "1h"}, "flows": {"orders": {"deadline": "60s"}}, **cfg}
    )


def test_timelines_keep_their_stored_layout(tmp_path):
    now = [T0]
    ledger = Ledger(config(tmp_path), Metrics(CollectorRegistry()), clock=lambda: now[0])
    source, first = ev(STAGE_SOURCE, "o-1", T0), ev(STAGE_ATTEMPT, "o-1", T0 + 1, attempt=1, code="503")
    ledger.record([source, first])
    ledger.close()
    # Reloaded after a restart (entries come back from JSON), a retry and the confirm are added.
    ledger = Ledger(config(tmp_path), Metrics(CollectorRegistry()), clock=lambda: now[0])
    assert ledger.load() == 1
    retry, confirm = ev(STAGE_ATTEMPT, "o-1", T0 + 3, attempt=2, code="200"), ev(STAGE_CONFIRM, "o-1", T0 + 4, idem="k")
    ledger.record([retry, confirm])
    ledger.close()
    outcome, lag, attempts, doc = closed(tmp_path / "ledger.db")[("o-1", "erp", "orders")]
    assert (outcome, lag, attempts) == ("confirmed", 4.0, 2)
    assert doc == {
        "attempts": [
            [first.trace_id.hex(), first.span_id.hex(), T0 + 0.5, T0 + 1, 1, "503", None],
            [retry.trace_id.hex(), retry.span_id.hex(), T0 + 2.5, T0 + 3, 2, "200", None],
        ],
        "close": [STAGE_CONFIRM, confirm.trace_id.hex(), confirm.span_id.hex(), T0 + 3.5, T0 + 4, None, "k"],
    }


def test_a_timeline_capped_below_the_index_counts_every_attempt(tmp_path):
    """limits.max_timeline_attempts may be as low as 10: the attempts dropped from such a timeline
    count at the close as they do for a retry storm of thousands."""
    now = [T0]
    metrics = Metrics(CollectorRegistry())
    ledger = Ledger(config(tmp_path, limits={"max_timeline_attempts": 10}), metrics, clock=lambda: now[0])
    ledger.record([ev(STAGE_SOURCE, "o-1", T0)])
    ledger.record([ev(STAGE_ATTEMPT, "o-1", T0 + i, attempt=i, code="429") for i in range(1, 16)])
    ledger.record([ev(STAGE_CONFIRM, "o-1", T0 + 20)])
    ledger.close()
    _, _, attempts, doc = closed(tmp_path / "ledger.db")[("o-1", "erp", "orders")]
    assert attempts == 15 and doc["omitted"] == 5 and len(doc["attempts"]) == 10
    fd = {"flow": "orders", "destination": "erp"}
    assert metrics.registry.get_sample_value("syncwatch_delivery_attempts_sum", fd) == 15
    assert not ledger.timelines.omitted  # nothing left behind for a closed transaction


class MemoryStore:
    """store.LedgerStore on dicts: a second backend written only against the interface. Rows are
    dicts by column name (records.*_COLUMNS)."""

    def __init__(self) -> None:
        self.open: dict[TxKey, dict] = {}
        self.closed: dict[TxKey, dict] = {}
        self.applies: dict[tuple[str, str, str], list] = {}
        self._saved: tuple | None = None

    def begin(self) -> None:
        self._saved = copy.deepcopy((self.open, self.closed, self.applies))

    def commit(self) -> None:
        self._saved = None

    def rollback(self) -> None:
        if self._saved is not None:
            self.open, self.closed, self.applies = self._saved
            self._saved = None

    def open_rows(self) -> Iterator[OpenRow]:
        for r in self.open.values():
            yield OpenRow(*(r[c] for c in OpenRow._fields))

    def closed_hashes(self) -> Iterator[int]:
        return iter([r["corr_hash"] for r in self.closed.values()])

    def closed_rows(self, keys: Sequence[TxKey]) -> dict[TxKey, ClosedRow]:
        return {k: row for k in keys if (row := self.closed_row(k)) is not None}

    def closed_row(self, key: TxKey) -> ClosedRow | None:
        r = self.closed.get(key)
        return None if r is None else ClosedRow(*(r[c] for c in ClosedRow._fields))

    def set_closed_source(self, key, lag, changed_at, source, source_trace, source_span) -> None:
        r = self.closed[key]
        r.update(lag=lag, changed_at=changed_at, source_trace=source_trace, source_span=source_span)
        if r["source"] is None:
            r["source"] = source

    def add_closed_attempt(self, key: TxKey, timeline: str) -> None:
        r = self.closed[key]
        r.update(attempts=r["attempts"] + 1, timeline=timeline)

    def set_closed_timeline(self, key: TxKey, timeline: str) -> None:
        self.closed[key]["timeline"] = timeline

    def apply_spans(self, idem, dest, flow):
        row = self.applies.get((idem, dest, flow))
        return None if row is None else (row[1], row[2])

    def insert_apply(self, idem, key, at, span, applies) -> None:
        self.applies[(idem, key[1], key[2])] = [applies, span, span]

    def add_apply(self, idem, dest, flow, at, span) -> None:
        row = self.applies[(idem, dest, flow)]
        row[0] += 1
        row[2] = span

    def write_batch(self, writes: BatchWrites) -> None:
        for key in writes.closed_deletes:
            del self.closed[key]
        for key, values in writes.stored_closes.items():
            self.closed[key] = {**self.open[key], **dict(zip(STORED_CLOSE_COLUMNS, values, strict=True))}
        for key in writes.open_deletes:
            del self.open[key]
        for key, values in writes.new_closes.items():
            self.closed[key] = dict(zip(CLOSED_TX_COLUMNS, values, strict=True))
        for values in writes.open_upserts:
            row = dict(zip(OPEN_TX_COLUMNS, values, strict=True))
            old = self.open.get(values[:3])
            if old is not None:
                row["opened_at"] = old["opened_at"]
                row["source_trace"] = row["source_trace"] or old["source_trace"]
                row["source_span"] = row["source_span"] or old["source_span"]
            self.open[values[:3]] = row

    def sweep(self, cutoff: float) -> None:
        self.closed = {k: r for k, r in self.closed.items() if r["closed_at"] >= cutoff}

    def close(self) -> None:
        pass


def test_a_second_backend_gives_the_transitions_what_sqlite_gives_them(tmp_path):
    results = []
    for store in (None, MemoryStore()):
        ledger_events.reset_ids()  # the same span IDs in both runs
        now = [T0]
        metrics = Metrics(CollectorRegistry())
        ledger = Ledger(config(tmp_path / type(store).__name__), metrics, clock=lambda: now[0], store=store)

        def rows(ledger=ledger, store=store):
            if store is None:
                return closed(ledger.config.storage.ledger_path)
            return {
                k: (r["outcome"], r["lag"], r["attempts"], orjson.loads(r["timeline"]) if r["timeline"] else None)
                for k, r in store.closed.items()
            }

        run(ledger, now)
        before_expiry, overdue = rows(), samples(metrics)
        now[0] = T0 + 3700
        ledger.tick(now[0])  # expires o-4 and o-5, then sweeps what closed before the horizon
        results.append((before_expiry, overdue, rows(), samples(metrics), sorted(ledger.pending)))
        ledger.close()
    assert results[0] == results[1]
    rows, overdue, after, metrics, still_open = results[0]
    assert {k[0]: v[0] for k, v in rows.items()} == {
        "o-0": "confirmed",
        "o-1": "confirmed",  # failed, then confirmed: the confirm replaces the fail
        "o-2": "confirmed",
        "o-3": "confirmed",
        "early": "confirmed",
    }
    assert rows[("early", "erp", "orders")][1] == 12.0  # the lag, known once the late source came
    assert rows[("o-2", "erp", "orders")][2] == 2  # the late attempt joined the timeline
    assert len(rows[("o-3", "erp", "orders")][3]["duplicates"]) == 1  # the redelivered batch added none
    tx = (("destination", "erp"), ("flow", "orders"), ("source", "storefront"))
    assert overdue[("syncwatch_transactions_overdue", tx)] == 2
    assert {k[0]: v[0] for k, v in after.items()} == {"o-4": "expired", "o-5": "expired"} and still_open == []
    assert metrics[("syncwatch_duplicate_applies_total", tx[:2])] == 1
    assert metrics[("syncwatch_transactions_total", (*tx[:2], ("outcome", "expired"), tx[2]))] == 2
    assert metrics[("syncwatch_transactions_overdue", tx)] == 0


def test_closed_rows_are_found_by_their_hash(tmp_path):
    """The memory store keeps corr_hash as SQLite does: ClosedKeys is rebuilt from it at start."""
    store = MemoryStore()
    now = [T0]
    ledger = Ledger(config(tmp_path), Metrics(CollectorRegistry()), clock=lambda: now[0], store=store)
    ledger.record([ev(STAGE_CONFIRM, "o-9", T0)])
    assert [r["corr_hash"] for r in store.closed.values()] == [corr_hash("o-9")]
    again = Ledger(config(tmp_path), Metrics(CollectorRegistry()), clock=lambda: now[0], store=store)
    assert again.load() == 0 and again.closed_keys.may_contain(corr_hash("o-9"))


def test_sqlite_writes_a_large_batch_row_for_row_as_given(tmp_path):
    """A batch's new closes and open rows go to SQLite several rows per statement: every column of
    every row, and the order closes are appended in, are those the interface handed over."""
    n = 2 * sqlite_store.ROWS_PER_INSERT + 5  # full statements and a remainder
    stores = (None, MemoryStore())
    tables = []
    for store in stores:
        ledger_events.reset_ids()
        now = [T0]
        ledger = Ledger(config(tmp_path / type(store).__name__), Metrics(CollectorRegistry()), lambda: now[0], store)
        ledger.record([ev(STAGE_SOURCE, f"o-{i}", T0 + i) for i in range(2 * n)])  # open rows
        retries = [ev(STAGE_ATTEMPT, f"o-{i}", T0 + 100 + i, code="503") for i in range(n)]
        closes = [ev(STAGE_CONFIRM, f"c-{i}", T0 + 200 + i, idem=f"k-{i}") for i in range(n)]
        ledger.record([*retries, *closes])  # open rows updated, new closes
        if store is None:
            db = sqlite3.connect(ledger.config.storage.ledger_path)
            cols = ",".join(CLOSED_TX_COLUMNS)
            opened = db.execute(f"SELECT {','.join(OPEN_TX_COLUMNS)} FROM open_tx").fetchall()
            tables.append((sorted(opened), db.execute(f"SELECT {cols} FROM closed_tx ORDER BY rowid").fetchall()))
            db.close()
        else:
            opened = [tuple(r[c] for c in OPEN_TX_COLUMNS) for r in store.open.values()]
            tables.append((sorted(opened), [tuple(r[c] for c in CLOSED_TX_COLUMNS) for r in store.closed.values()]))
        ledger.close()
    assert tables[0] == tables[1]
    opened, closes_in_order = tables[0]
    assert len(opened) == 2 * n and sum(1 for r in opened if r[9] == 1) == n  # attempts: the retried ones
    assert [r[0] for r in closes_in_order] == [f"c-{i}" for i in range(n)]
