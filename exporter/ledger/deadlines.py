"""When open transactions become overdue and when they expire: a heap of (time, check, key), checked
by the writer's tick. Entries go stale when a deadline moves; a check then finds nothing to do.
Also when the store sweeps what is older than the expiry horizon.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from syncwatch.ledger.records import TxKey, TxLabels

CHECK_OVERDUE, CHECK_EXPIRE = 0, 1
SWEEP_SECONDS = 60

Entry = tuple[float, int, TxKey]  # (when, CHECK_*, key)


class Timed(Protocol):
    """What the deadlines read and mark of an open transaction (transitions.Tx)."""

    labels: TxLabels
    changed_at: float | None
    opened_at: float
    deadline: float
    overdue: bool


class Deadlines:
    def __init__(self, expire_after: float, clock: Callable[[], float]):
        self.expire_after = expire_after
        self.clock = clock
        self.heap: list[Entry] = []
        self._last_sweep = 0.0

    def schedule(self, key: TxKey, deadline: float) -> None:
        """Check this transaction at its deadline."""
        heapq.heappush(self.heap, (deadline, CHECK_OVERDUE, key))

    def schedule_each(self, entries: Iterable[tuple[TxKey, float]]) -> None:
        """Check these transactions at their deadlines (those a batch opened)."""
        heap, push = self.heap, heapq.heappush
        for key, deadline in entries:
            push(heap, (deadline, CHECK_OVERDUE, key))

    def schedule_all(self, entries: Iterable[tuple[TxKey, float]]) -> None:
        """Many transactions at once (a reload): one heapify instead of a push each."""
        self.heap.extend((deadline, CHECK_OVERDUE, key) for key, deadline in entries)
        heapq.heapify(self.heap)

    def retry_expiry(self, keys: Iterable[TxKey], now: float) -> None:
        """Expiries that could not be written: due again at the next tick."""
        for key in keys:
            heapq.heappush(self.heap, (now, CHECK_EXPIRE, key))

    def moved(self, tx: Timed, key: TxKey, deadline: float) -> bool:
        """A transaction's deadline moves (its source span arrived); True when it was overdue and no
        longer is (the provisional deadline was too early)."""
        tx.deadline = deadline
        self.schedule(key, deadline)
        if tx.overdue and deadline > self.clock():
            tx.overdue = False
            return True
        return False

    def due(self, now: float, pending: Mapping[TxKey, Timed]) -> tuple[list[Timed], list[TxKey]]:
        """Checks due by `now`: the transactions that just became overdue (marked so), and the keys
        of overdue ones past the expiry horizon (to expire)."""
        heap = self.heap
        overdue: list[Timed] = []
        expired: list[TxKey] = []
        while heap and heap[0][0] <= now:
            when, kind, key = heapq.heappop(heap)
            tx = pending.get(key)
            if tx is None:
                continue
            if kind == CHECK_OVERDUE:
                if tx.deadline != when or tx.overdue:
                    continue  # stale entry: the deadline moved
                tx.overdue = True
                overdue.append(tx)
                base = tx.changed_at if tx.changed_at is not None else tx.opened_at
                heapq.heappush(heap, (max(base + self.expire_after, when), CHECK_EXPIRE, key))
            elif tx.overdue:
                expired.append(key)
        return overdue, expired

    def sweep_due(self, now: float) -> float | None:
        """Once a minute: the cutoff before which closed transactions are forgotten, else None."""
        if now - self._last_sweep < SWEEP_SECONDS:
            return None
        self._last_sweep = now
        return now - self.expire_after

    def clear(self) -> None:
        self.heap.clear()
