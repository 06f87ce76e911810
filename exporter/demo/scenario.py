"""What the flash-sale simulation does, in compressed time: rates, deadlines, and the fault plan.

The fault plan is drawn up front from a seed, so every run has lost orders, poisoned orders and
double-applied adjustments to find; rate-limit exhaustion (429 storms) comes on top, emerging from
the load. Ground truth is never taken from the plan: it is measured at the ERP and in the DLQ.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FLOWS = ("orders", "inventory", "customers")


@dataclass
class DemoSettings:
    duration: float = 60.0  # target wall time of the whole run, drain included
    orders: int | None = None  # orders to produce; default: from the rate and the production window
    normal_order_rate: float = 2.0  # orders/s on a normal day; the sale runs at four times that
    sale_multiplier: float = 4.0
    inventory_rate: float = 2.5  # inventory adjustments/s
    customer_rate: float = 1.0  # customer updates/s
    # Deadlines to confirm, compressed from the SPEC's 5 min / 30 s / 6 h.
    deadlines: dict[str, float] = field(default_factory=lambda: {"orders": 8.0, "inventory": 5.0, "customers": 10.0})
    erp_rate_limit: float = 10.5  # requests/s the ERP accepts before answering 429
    erp_burst: float = 5.0
    erp_hang_seconds: float = 3.0  # an ERP "timeout": no answer for this long
    erp_random_hang_ratio: float = 0.02  # plain timeouts the worker retries normally
    client_timeout: float = 1.5
    retry_interval: int = 1  # seconds, fixed, no jitter (SQS visibility timeouts are whole seconds)
    max_attempts: int = 4  # the queue's maxReceiveCount: after that the broker dead-letters
    workers: int = 8
    lost_order_ratio: float = 0.04  # orders the worker drops after a timeout without recording it
    poisoned_order_ratio: float = 0.03  # orders the ERP rejects every time (dead-lettered)
    duplicate_inventory_ratio: float = 0.05  # adjustments applied twice (delete lost, redelivered)
    seed: int = 6
    live_interval: float = 2.0

    @classmethod
    def short(cls, duration: float = 25.0) -> DemoSettings:
        # For tests and CI: fewer records, tighter deadlines, same faults.
        return cls(
            duration=duration,
            normal_order_rate=1.5,
            inventory_rate=1.5,
            customer_rate=0.5,
            deadlines={"orders": 6.0, "inventory": 4.0, "customers": 6.0},
            erp_rate_limit=7.0,
            erp_burst=3.0,
            workers=6,
            lost_order_ratio=0.06,
            poisoned_order_ratio=0.05,
            duplicate_inventory_ratio=0.15,
        )

    @property
    def order_rate(self) -> float:
        return self.normal_order_rate * self.sale_multiplier

    @property
    def settle_seconds(self) -> float:
        """Time after the last record for retries to finish and the last lost order to go overdue."""
        retries = self.max_attempts * (self.retry_interval + self.client_timeout) + self.erp_hang_seconds
        return max(max(self.deadlines.values()) + 1.5, retries + 2.0)

    @property
    def production_seconds(self) -> float:
        if self.orders is not None:
            return max(self.orders / self.order_rate, 1.0)
        return max(self.duration - self.settle_seconds - 3.0, 3.0)

    @property
    def order_count(self) -> int:
        return self.orders if self.orders is not None else max(int(self.order_rate * self.production_seconds), 10)


@dataclass
class FaultPlan:
    lose: set[str]  # order IDs: the ERP hangs on the first attempt, the worker drops the order
    poison: set[str]  # order IDs: the ERP answers 503 to every attempt
    # How many inventory adjustments lose their delete after being applied (so the queue delivers
    # them again): the first ones that succeed with retries to spare, chosen while the sale runs.
    duplicates: int
    rng: random.Random

    @classmethod
    def draw(cls, settings: DemoSettings, order_ids: list[str], adjustment_ids: list[str]) -> FaultPlan:
        """Which orders are lost or poisoned, how many adjustments get applied twice."""
        rng = random.Random(settings.seed)
        picks = list(order_ids)
        rng.shuffle(picks)
        n_lose = max(1, round(len(picks) * settings.lost_order_ratio))
        n_poison = max(1, round(len(picks) * settings.poisoned_order_ratio))
        # At least three, so every run has duplicate applies to find (a redelivered copy can still be
        # dead-lettered by 429s instead of applied again).
        n_dup = max(3, round(len(adjustment_ids) * settings.duplicate_inventory_ratio))
        return cls(
            lose=set(picks[:n_lose]),
            poison=set(picks[n_lose : n_lose + n_poison]),
            duplicates=min(n_dup, len(adjustment_ids)),
            rng=rng,
        )
