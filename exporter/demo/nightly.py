"""The ERP's nightly customer sync, in compressed time: it exports the customer master from a copy
taken before the sale and writes it into the storefront, so the first customer whose new shipping
address reached the ERP gets the old one back within the sync window (the seed's write conflict)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from syncwatch_instrument import SyncInstrument

from syncwatch.demo.erp import FakeErp
from syncwatch.demo.storefront import Storefront, address

SOURCE_ATTR = "syncwatch.source"
DESTINATION_ATTR = "syncwatch.destination"


class NightlySync:
    def __init__(
        self,
        erp: FakeErp,
        storefront: Storefront,
        sw: SyncInstrument,
        flush_upstream: Callable[[], bool],
        seed: int,
        delay: float = 1.0,
    ) -> None:
        self.erp = erp
        self.storefront = storefront
        self.sw = sw
        # The storefront's own write must reach syncwatch first, as it would a night earlier.
        self.flush_upstream = flush_upstream
        self.rng = random.Random(seed + 2)
        self.delay = delay
        self.written: list[str] = []  # customer IDs whose address the sync wrote back
        self.done = asyncio.Event()

    def _first_applied_customer(self) -> str | None:
        for record_id, flow in self.erp.applied_flow.items():
            if flow == "customers":
                return record_id
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Waits for the first applied customer update (or `stop`), then writes the old address back."""
        try:
            record_id = None
            while record_id is None and not stop.is_set():
                record_id = self._first_applied_customer()
                if record_id is None:
                    await asyncio.sleep(0.1)
            if record_id is None:
                return  # the run ended before any customer update reached the ERP
            await asyncio.sleep(self.delay)
            await asyncio.to_thread(self.flush_upstream)
            payload: dict[str, Any] = self.storefront.by_id[record_id].payload
            customer_id = payload["customer_id"]
            new = payload["shipping"]["address"]
            old = address(self.rng)
            while old == new:
                old = address(self.rng)
            body = {"customer_id": customer_id, "shipping": {"address": old}, "source": "erp-nightly-export"}
            self.storefront.write_address(customer_id, old, "erp")
            self.sw.snapshot(
                f"NS-{customer_id}",
                body,
                "request",
                flow="customers",
                attributes={SOURCE_ATTR: "erp", DESTINATION_ATTR: "storefront"},
            )
            self.written.append(customer_id)
        finally:
            self.done.set()
