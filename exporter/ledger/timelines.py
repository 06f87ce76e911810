"""The attempts of each open transaction: a redelivered span is recognised by its span ID, an attempt
without a resend count is numbered after the last, the backoff from the attempt before is found, and
a retry storm's timeline is capped (the first attempts and the latest are kept, the rest counted).
"""

from __future__ import annotations

from syncwatch.ledger.memory import Tx
from syncwatch.ledger.records import Attempt, Event, Timeline, TxKey, attempts_of

INDEX_ATTEMPTS = 32  # above this many attempts, a transaction's span IDs are found through a set
TIMELINE_HEAD = 10  # attempts kept from the start of a capped timeline; the rest are the latest ones


class AttemptIndex:
    """Span IDs and attempt numbers of a transaction with many attempts (a retry storm), so each
    new attempt costs the same however many came before it."""

    __slots__ = ("end_of", "max_n", "spans")

    def __init__(self, attempts: list[Attempt]):
        self.spans = {span for _trace, span, *_ in attempts}
        self.max_n = max(n for _trace, _span, _start, _end, n, *_ in attempts)
        # attempt number -> end of its latest span
        self.end_of = {n: end for _trace, _span, _start, end, n, *_ in attempts}

    def add(self, entry: Attempt) -> None:
        _trace, span, _start, end, n, _code, _error = entry
        self.spans.add(span)
        self.max_n = max(self.max_n, n)
        end_of = self.end_of
        if len(end_of) > 4 * INDEX_ATTEMPTS and n not in end_of:
            end_of.clear()  # many distinct numbers: keep only recent ones (bounded memory)
        end_of[n] = end


class Timelines:
    def __init__(self, max_attempts: int):
        self.max_attempts = max_attempts
        self.omitted: dict[TxKey, int] = {}  # key -> attempts dropped from the middle of its timeline
        self._index: dict[TxKey, AttemptIndex] = {}  # key -> index of a transaction with many attempts

    def add(self, key: TxKey, tx: Tx, ev: Event, span_hex: str) -> tuple[int, float | None] | None:
        """Add an attempt span to an open transaction: (its number, the end of attempt n-1 if known),
        or None when this span is already in the timeline (a redelivery)."""
        attempts = tx.attempts
        n = ev.attempt
        prev_end = None
        index = None
        if attempts is None:
            attempts = tx.attempts = []
            if n is None:
                n = 1
        elif len(attempts) <= INDEX_ATTEMPTS:
            # One pass: the span seen already, or the highest number so far and the end of its latest span.
            max_n, max_end = 0, None
            for _trace, span, _start, end, a_n, _code, _error in attempts:
                if span == span_hex:
                    return None
                if a_n >= max_n:
                    max_n, max_end = a_n, end
            if n is None:
                n = max_n + 1
                if max_n:
                    prev_end = max_end
            elif n > 1:
                prev_end = next((end for _t, _s, _start, end, a_n, *_ in reversed(attempts) if a_n == n - 1), None)
        else:
            index = self._index.get(key)
            if index is None:
                index = self._index[key] = AttemptIndex(attempts)
            if span_hex in index.spans:
                return None
            if n is None:
                n = index.max_n + 1
            if n > 1:
                prev_end = index.end_of.get(n - 1)
        entry: Attempt = (ev.trace_id.hex(), span_hex, ev.start, ev.end, n, ev.code, ev.error)
        attempts.append(entry)
        if index is not None:
            index.add(entry)
        if len(attempts) > self.max_attempts:
            # A retry storm on one transaction: keep the first attempts and the latest, count the rest.
            dropped = attempts.pop(TIMELINE_HEAD)
            if index is not None:
                index.spans.discard(dropped[1])  # its span ID
            self.omitted[key] = self.omitted.get(key, 0) + 1
        return n, prev_end

    def add_late(self, doc: Timeline, ev: Event, span_hex: str) -> int | None:
        """Add an attempt span to a closed transaction's timeline document: its number, or None
        when the span is already in it."""
        attempts = doc["attempts"] = attempts_of(doc.get("attempts", []))
        if any(span == span_hex for _trace, span, *_ in attempts):
            return None
        n = ev.attempt or max((a_n for _t, _s, _start, _end, a_n, *_ in attempts), default=0) + 1
        attempts.append((ev.trace_id.hex(), span_hex, ev.start, ev.end, n, ev.code, ev.error))
        if len(attempts) > self.max_attempts:
            attempts.pop(TIMELINE_HEAD)
            doc["omitted"] = doc.get("omitted", 0) + 1
        return n

    def closing(self, key: TxKey, tx: Tx) -> tuple[int, int]:
        """A transaction closes: (its attempt count, the attempts omitted from its timeline); forgets it."""
        attempts = len(tx.attempts) if tx.attempts else 0
        if attempts > INDEX_ATTEMPTS:
            self._index.pop(key, None)
        # Timelines capped below INDEX_ATTEMPTS (limits.max_timeline_attempts >= 10) omit attempts too.
        omitted = self.omitted.pop(key, 0) if self.omitted else 0
        return attempts + omitted, omitted

    def clear(self) -> None:
        self.omitted.clear()
        self._index.clear()
