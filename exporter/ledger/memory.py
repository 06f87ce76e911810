"""The ledger's in-memory mirror of what is stored: open transactions (Tx) and a bitmap of which
correlation IDs may have closed. Slots and bit sets keep a
million open transactions well under 1 KiB each.
"""

from __future__ import annotations

from syncwatch.ledger.records import Attempt, Close, Timeline, TxLabels, to_json

CLOSED_KEYS_BITS = 1 << 27
CLOSED_KEYS_MASK = CLOSED_KEYS_BITS - 1  # bit of a corr_hash: h & CLOSED_KEYS_MASK (the hot path inlines add)


class ClosedKeys:
    """Which correlation IDs may have a closed_tx row: one bit per corr_hash, modulo 2**27 (16 MiB).

    Every source span must find out whether its transaction already closed (a confirm that arrived
    first, a redelivered source); almost always it has not. A clear bit answers that without asking
    the store. A set bit may be another ID's (about 1 in 14 with 10 million closed rows) or a row swept
    since; the lookup then just goes to the store. Bits are set before a close commits and rebuilt
    from the store at start."""

    BITS = CLOSED_KEYS_BITS
    MASK = CLOSED_KEYS_MASK

    def __init__(self) -> None:
        self.bits = bytearray(self.BITS >> 3)

    def clear(self) -> None:
        self.bits = bytearray(self.BITS >> 3)

    def add(self, h: int) -> None:
        h &= self.MASK
        self.bits[h >> 3] |= 1 << (h & 7)

    def may_contain(self, h: int) -> bool:
        h &= self.MASK
        return bool(self.bits[h >> 3] & (1 << (h & 7)))


class Tx:
    """An open transaction."""

    __slots__ = ("attempts", "changed_at", "deadline", "labels", "opened_at", "overdue", "src", "stored")

    def __init__(
        self,
        labels: TxLabels,
        changed_at: float | None,
        opened_at: float,
        deadline: float,
        attempts: list[Attempt] | None = None,
        stored: bool = False,
        src: tuple[bytes, bytes] | None = None,
    ):
        self.labels = labels  # shared (flow, source, destination) tuple
        self.changed_at = changed_at
        self.opened_at = opened_at
        self.deadline = deadline
        self.attempts = attempts  # None until the first attempt
        self.overdue = False
        self.stored = stored  # has an open row (a transaction opened and closed in one batch never gets one)
        self.src = src  # (trace_id, span_id) of the source span until it is written

    def timeline(self, close: Close | None = None, omitted: int = 0) -> str | None:
        """The timeline to store: None while there is nothing in it."""
        if not self.attempts and close is None:
            return None
        doc: Timeline = {"attempts": self.attempts or []}
        if omitted:
            doc["omitted"] = omitted
        if close is not None:
            doc["close"] = close
        return to_json(doc)
