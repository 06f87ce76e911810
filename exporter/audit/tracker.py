"""Per (flow, record, field): the latest write seen (time, value hash, writer, correlation ID), and
the findings a new write makes against it. Pure and single-threaded (it runs on the audit thread);
memory is bounded by a cap on tracked fields and the retention sweep. The records changed since
the last `take_changes()` are remembered, so the Auditor can persist them in its next batch
(audit/state.py) and a restart picks up where the last process stopped."""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

CONFLICT = "conflict"
VIOLATION = "violation"

# One tracked field: (time, value hash, writer, correlation ID). Writer and correlation ID strings
# are shared by every field of the same payload.
State = tuple[float, int, str, str]
Single = tuple[float, str, str]  # the (time, writer, correlation ID) shared by all fields of a record
Change = tuple[str, str, dict[str, State] | None, Single | None]  # flow, record, fields now (None: gone)


@dataclass(frozen=True, slots=True)
class Write:
    flow: str
    record: str
    field: str
    writer: str
    time: float
    value_hash: int
    owner: str | None  # who owns the field for this write (None: nobody)
    corr: str


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # conflict | violation
    write: Write
    prev: State


class WriteTracker:
    def __init__(self, max_fields: int) -> None:
        self.max_fields = max_fields
        self._records: OrderedDict[tuple[str, str], dict[str, State]] = OrderedDict()
        self.fields = 0
        self.evicted = 0
        # Records written, swept or evicted since the last take_changes(), persisted in the next
        # batch; with (time, writer, correlation ID) when one payload wrote all their fields.
        self._changed: dict[tuple[str, str], Single | None] = {}

    def observe(self, write: Write, window: float) -> list[Finding]:
        """One write (the property test's entry); the intake uses observe_record."""
        found = self.observe_record(
            write.flow,
            write.record,
            write.writer,
            write.time,
            write.corr,
            window,
            [(write.field, write.value_hash, write.owner)],
        )
        return [Finding(kind, write, prev) for _field, kind, prev in found]

    def observe_record(
        self,
        flow: str,
        record: str,
        writer: str,
        t: float,
        corr: str,
        window: float,
        items: list[tuple[str, int, str | None]],
    ) -> list[tuple[str, str, State]]:
        """The fields (name, value hash, owner) one payload wrote to one record; returns the
        findings as (field, kind, the earlier write)."""
        if not items:
            return []
        key = (flow, record)
        rec = self._records.get(key)
        if rec is None:
            rec = self._records[key] = {}
        else:
            self._records.move_to_end(key)
        writer = sys.intern(writer)
        found: list[tuple[str, str, State]] = []
        stored = 0
        for field, h, owner in items:
            prev = rec.get(field)
            if prev is None:
                self.fields += 1
                rec[field] = (t, h, writer, corr)
                stored += 1
                continue
            if prev[1] != h:
                if prev[2] != writer and abs(t - prev[0]) <= window:
                    found.append((field, CONFLICT, prev))
                if owner is not None and writer != owner:
                    found.append((field, VIOLATION, prev))
            if t >= prev[0]:
                # The latest write in time stays the reference; a late-arriving older one does not replace it.
                rec[field] = (t, h, writer, corr)
                stored += 1
        self._changed[key] = (t, writer, corr) if stored == len(rec) else None
        self._trim()
        return found

    def _trim(self) -> None:
        while self.fields > self.max_fields and self._records:
            key, gone = self._records.popitem(last=False)
            self._changed[key] = None
            self.fields -= len(gone)
            self.evicted += len(gone)

    def load(self, flow: str, record: str, fields: dict[str, State]) -> None:
        """One record read back from disk at start (oldest first, so the order of eviction holds)."""
        key = (flow, record)
        old = self._records.pop(key, None)
        if old is not None:
            self.fields -= len(old)
        self._records[key] = fields
        self.fields += len(fields)
        self._trim()

    def forget(self, flow: str, record: str) -> None:
        """Drop one record (and its row on disk with the next batch); not an eviction."""
        gone = self._records.pop((flow, record), None)
        if gone is not None:
            self.fields -= len(gone)
        self._changed[(flow, record)] = None

    def take_changes(self) -> list[Change]:
        """(flow, record, its fields now or None when it is gone, the write that set them all or None)
        for each record changed since the last call; the caller persists them."""
        changed, self._changed = self._changed, {}
        return [(flow, record, self._records.get((flow, record)), single) for (flow, record), single in changed.items()]

    def mark_changed(self, keys: Iterable[tuple[str, str]]) -> None:
        """Persist these records again with the next batch (the last write of them failed)."""
        for key in keys:
            self._changed[key] = None

    def sweep(self, cutoff: float) -> int:
        """Forget fields last written before `cutoff` (the snapshot retention's cutoff)."""
        removed = 0
        for key in list(self._records):
            rec = self._records[key]
            old = [f for f, st in rec.items() if st[0] < cutoff]
            for f in old:
                del rec[f]
            removed += len(old)
            if old:
                self._changed[key] = None
            if not rec:
                del self._records[key]
        self.fields -= removed
        return removed


Entry = tuple[str, str, float]  # value, correlation ID, time


class LatestByKey:
    """A bounded map key -> (value, correlation ID, time): idempotency keys and record IDs. Like
    the WriteTracker it remembers the keys changed since the last take_changes(), to be persisted."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._items: OrderedDict[tuple[str, ...], Entry] = OrderedDict()
        self.evicted = 0
        self._changed: set[tuple[str, ...]] = set()

    def swap(self, key: tuple[str, ...], value: str, corr: str, time: float) -> tuple[str, str, float] | None:
        """Remember value for key; returns the earlier entry when its value differs."""
        prev = self._items.get(key)
        if prev is not None and prev[0] == value:
            self._items.move_to_end(key)
            return None
        self._items[key] = (value, corr, time)
        self._items.move_to_end(key)
        self._changed.add(key)
        self._trim()
        return prev

    def _trim(self) -> None:
        while len(self._items) > self.max_items:
            gone, _ = self._items.popitem(last=False)
            self._changed.add(gone)
            self.evicted += 1

    def load(self, key: tuple[str, ...], entry: Entry) -> None:
        """One entry read back from disk at start (oldest first)."""
        self._items[key] = entry
        self._items.move_to_end(key)
        self._trim()

    def forget(self, key: tuple[str, ...]) -> None:
        self._items.pop(key, None)
        self._changed.add(key)

    def take_changes(self) -> list[tuple[tuple[str, ...], Entry | None]]:
        """(key, its entry now or None when it is gone) for each key changed since the last call."""
        changed, self._changed = self._changed, set()
        return [(k, self._items.get(k)) for k in changed]

    def mark_changed(self, keys: Iterable[tuple[str, ...]]) -> None:
        self._changed.update(keys)

    def sweep(self, cutoff: float) -> int:
        old = [k for k, v in self._items.items() if v[2] < cutoff]
        for k in old:
            del self._items[k]
        self._changed.update(old)
        return len(old)

    def __len__(self) -> int:
        return len(self._items)
