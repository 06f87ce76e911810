"""Data audits from the payload snapshots: who writes which field, who owns it, which writes
conflict, and which retries are not retries (idempotency key reuse, duplicate destination records)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

if TYPE_CHECKING:
    from syncwatch.audit.auditor import Auditor
    from syncwatch.config.models import Config


def make_auditor(config: Config, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> Auditor | None:
    """The auditor for the configured flows, or None when audit.flows is empty (no cost at all)."""
    if not config.audit.flows:
        return None
    from syncwatch.audit.auditor import Auditor

    systems = {d for f in config.flows.values() for d in f.destinations}
    return Auditor(config.audit, systems, registry, config.storage.data_dir, clock)
