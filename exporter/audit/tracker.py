"""Per (flow, record, field): the latest write seen (time, value hash, writer, correlation ID), and
the findings a new write makes against it. Pure and single-threaded (it runs on the snapshot
store thread); memory is bounded by a cap on tracked fields and the retention sweep."""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass

CONFLICT = "conflict"
VIOLATION = "violation"

# One tracked field: (time, value hash, writer, correlation ID). Writer and correlation ID strings
# are shared by every field of the same payload.
State = tuple[float, int, str, str]


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


def judge(write: Write, prev: State | None, window: float) -> list[str]:
    """The findings of `write` against the field's latest earlier write."""
    if prev is None or prev[1] == write.value_hash:
        return []  # nothing known to compare, or the value is unchanged: no change made
    kinds = []
    if prev[2] != write.writer and abs(write.time - prev[0]) <= window:
        kinds.append(CONFLICT)
    if write.owner is not None and write.writer != write.owner:
        kinds.append(VIOLATION)
    return kinds


class WriteTracker:
    def __init__(self, max_fields: int) -> None:
        self.max_fields = max_fields
        self._records: OrderedDict[tuple[str, str], dict[str, State]] = OrderedDict()
        self.fields = 0
        self.evicted = 0

    def observe(self, write: Write, window: float) -> list[Finding]:
        key = (write.flow, write.record)
        rec = self._records.get(key)
        if rec is None:
            rec = self._records[key] = {}
        else:
            self._records.move_to_end(key)
        prev = rec.get(write.field)
        found = [Finding(k, write, prev) for k in judge(write, prev, window)] if prev is not None else []
        if prev is None:
            self.fields += 1
        if prev is None or write.time >= prev[0]:
            # The latest write in time stays the reference; a late-arriving older one does not replace it.
            rec[write.field] = (write.time, write.value_hash, sys.intern(write.writer), write.corr)
        while self.fields > self.max_fields and self._records:
            _, gone = self._records.popitem(last=False)
            self.fields -= len(gone)
            self.evicted += len(gone)
        return found

    def sweep(self, cutoff: float) -> int:
        """Forget fields last written before `cutoff` (the snapshot retention's cutoff)."""
        removed = 0
        for key in list(self._records):
            rec = self._records[key]
            old = [f for f, st in rec.items() if st[0] < cutoff]
            for f in old:
                del rec[f]
            removed += len(old)
            if not rec:
                del self._records[key]
        self.fields -= removed
        return removed


class LatestByKey:
    """A bounded map key -> (value, correlation ID, time): idempotency keys and record IDs."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._items: OrderedDict[tuple[str, ...], tuple[str, str, float]] = OrderedDict()
        self.evicted = 0

    def swap(self, key: tuple[str, ...], value: str, corr: str, time: float) -> tuple[str, str, float] | None:
        """Remember value for key; returns the earlier entry when its value differs."""
        prev = self._items.get(key)
        if prev is not None and prev[0] == value:
            self._items.move_to_end(key)
            return None
        self._items[key] = (value, corr, time)
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
            self.evicted += 1
        return prev

    def sweep(self, cutoff: float) -> int:
        old = [k for k, v in self._items.items() if v[2] < cutoff]
        for k in old:
            del self._items[k]
        return len(old)

    def __len__(self) -> int:
        return len(self._items)
