"""The dead-letter book as the sidecar wires it: the collectors read dead letters (plug-ins import
only the config layer and the collector base); here their bodies go through the snapshot redactor
and their correlation IDs are linked through the ledger's read-only queries."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syncwatch.collectors.deadletters import DeadLetterBook
from syncwatch.ledger.reader import open_queries
from syncwatch.snapshots import build_redactor


def book_for_config(config: Any, clock: Callable[[], float] = time.time) -> DeadLetterBook:
    """The book as the sidecar runs it: bodies through the snapshot redactor (same rules and key,
    so markers match the payload snapshots'), links through the ledger's read-only queries."""
    redactor = build_redactor(config)
    queries = open_queries(config, clock)

    def redact(body: bytes, truncated: bool) -> tuple[bytes, str, int]:
        result = redactor.redact_head(body, len(body)) if truncated else redactor.redact_body(body)
        return result.data, result.content_type, sum(result.counts.values())

    def link(corrs: list[str]) -> set[str]:
        return set(queries.timelines(corrs))

    return DeadLetterBook(Path(config.storage.data_dir) / "deadletters.db", redact, link, clock)
