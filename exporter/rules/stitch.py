"""The stitching index: which correlation ID a trace or a message ID stands for, and the spans
of a flow still waiting for theirs. Spans arrive in any order and from several services, so an
ID learned later is handed to the spans that came first. Bounded by entries and by age."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

AMBIGUOUS = ""  # a trace that named two different IDs: its spans are not stitched through it


@dataclass
class Pending:
    """A span of a flow without a correlation ID yet, and the keys that can give it one."""

    keys: tuple[Hashable, ...]
    payload: Any
    since: float
    done: bool = field(default=False)


@dataclass
class Evicted:
    learned_age: int = 0
    learned_size: int = 0
    pending_age: list[Pending] = field(default_factory=list)
    pending_size: list[Pending] = field(default_factory=list)


class StitchIndex:
    def __init__(self, max_entries: int, max_pending: int, window: float):
        self.max_entries = max_entries
        self.max_pending = max_pending
        self.window = window
        self._learned: OrderedDict[Hashable, tuple[str, float]] = OrderedDict()  # key -> (corr, at)
        self._pending: OrderedDict[int, Pending] = OrderedDict()
        self._waiting: dict[Hashable, list[Pending]] = {}
        self._next = 0
        self.evicted = Evicted()

    @property
    def learned_size(self) -> int:
        return len(self._learned)

    @property
    def pending_size(self) -> int:
        return len(self._pending)

    def lookup(self, keys: tuple[Hashable, ...]) -> str | None:
        learned = self._learned
        for key in keys:
            hit = learned.get(key)
            if hit is not None and hit[0] != AMBIGUOUS:
                return hit[0]
        return None

    def learn(self, keys: tuple[Hashable, ...], corr: str, now: float) -> list[tuple[Pending, str]]:
        """Remember that these keys stand for `corr`; return the waiting spans it releases (and,
        through them, the spans waiting on their keys): each with the ID it receives."""
        released: list[tuple[Pending, str]] = []
        work = [(keys, corr)]
        learned, waiting = self._learned, self._waiting
        while work:
            ks, c = work.pop()
            for key in ks:
                old = learned.get(key)
                if old is None:
                    learned[key] = (c, now)
                    if len(learned) > self.max_entries:
                        learned.popitem(last=False)
                        self.evicted.learned_size += 1
                elif old[0] != c:
                    if old[0] != AMBIGUOUS:
                        learned[key] = (AMBIGUOUS, now)  # one trace, two IDs: stitch nothing through it
                    continue
                else:
                    learned[key] = (c, now)
                    learned.move_to_end(key)
                for p in waiting.pop(key, ()):
                    if not p.done:
                        p.done = True
                        self._pending.pop(id(p), None)
                        released.append((p, c))
                        work.append((p.keys, c))
        return released

    def hold(self, pending: Pending) -> None:
        self._pending[id(pending)] = pending
        for key in pending.keys:
            self._waiting.setdefault(key, []).append(pending)
        if len(self._pending) > self.max_pending:
            _, oldest = self._pending.popitem(last=False)
            self._drop(oldest)
            self.evicted.pending_size.append(oldest)

    def expire(self, now: float) -> None:
        """Forget what is older than the window (learned IDs by last use, spans by arrival)."""
        cutoff = now - self.window
        learned = self._learned
        while learned:
            key, (_, at) = next(iter(learned.items()))
            if at >= cutoff:
                break
            del learned[key]
            self.evicted.learned_age += 1
        pending = self._pending
        while pending:
            p = next(iter(pending.values()))
            if p.since >= cutoff:
                break
            pending.popitem(last=False)
            self._drop(p)
            self.evicted.pending_age.append(p)

    def drain(self) -> list[Pending]:
        """Every span still waiting (end of a `rules test` run)."""
        left = list(self._pending.values())
        for p in left:
            self._drop(p)
        self._pending.clear()
        return left

    def take_evicted(self) -> Evicted:
        ev, self.evicted = self.evicted, Evicted()
        return ev

    def _drop(self, p: Pending) -> None:
        p.done = True
        waiting = self._waiting
        for key in p.keys:
            lst = waiting.get(key)
            if lst is not None:
                lst = [q for q in lst if not q.done]
                if lst:
                    waiting[key] = lst
                else:
                    del waiting[key]
