"""Ground truth, measured where it happened (the ERP's applies, the DLQ's contents), and what
syncwatch found, read through its query API and /metrics. The report compares the two."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from syncwatch.demo.live import MetricsView


@dataclass
class GroundTruth:
    sent: dict[str, str]  # record ID -> flow
    lost: set[str]  # sent, never applied at the ERP, not in the DLQ: silently lost
    dead_lettered: set[str]  # in the DLQ and never applied
    duplicates: set[str]  # applied more than once on an exactly-once flow
    dlq_depth: int
    applied: int

    @classmethod
    def measure(
        cls,
        sent: Mapping[str, str],
        applies: Mapping[str, int],
        dlq_bodies: list[dict[str, Any]],
        exactly_once: Mapping[str, bool],
    ) -> GroundTruth:
        in_dlq = {b["id"] for b in dlq_bodies}
        applied = {i for i, n in applies.items() if n > 0}
        return cls(
            sent=dict(sent),
            lost={i for i in sent if i not in applied and i not in in_dlq},
            dead_lettered={i for i in in_dlq if i not in applied},
            duplicates={i for i, n in applies.items() if n > 1 and exactly_once.get(sent.get(i, ""), True)},
            dlq_depth=len(dlq_bodies),
            applied=len(applied),
        )


@dataclass
class Findings:
    overdue: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)  # open and still within the deadline
    failed: set[str] = field(default_factory=set)
    duplicates: set[str] = field(default_factory=set)
    dlq_depth: float = 0.0  # syncwatch_dlq_messages, sampled by the collector
    overdue_metric: float = 0.0
    failed_metric: float = 0.0
    duplicates_metric: float = 0.0
    retries: float = 0.0
    attempts_by_code: dict[str, float] = field(default_factory=dict)
    jitter_ratio: dict[str, float] = field(default_factory=dict)


def _items(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, list):
        return doc
    for key in ("transactions", "items", "results", "data"):
        if isinstance(doc.get(key), list):
            return doc[key]
    return []


def _next_cursor(doc: Any) -> str | None:
    if isinstance(doc, dict):
        for key in ("next_cursor", "next", "cursor"):
            if isinstance(doc.get(key), str) and doc[key]:
                return doc[key]
    return None


async def list_transactions(session: aiohttp.ClientSession, base: str, token: str, state: str) -> set[str]:
    """Correlation IDs in `state` from GET /api/v1/transactions?state=…, following pages."""
    ids: set[str] = set()
    params: dict[str, str] = {"state": state, "limit": "1000"}
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(1000):
        async with session.get(f"{base}/api/v1/transactions", params=params, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"query API answered {resp.status} for state={state}: {(await resp.text())[:200]}")
            doc = await resp.json()
        for item in _items(doc):
            ids.add(item.get("correlation_id") or item.get("corr") or item["id"])
        cursor = _next_cursor(doc)
        if not cursor:
            break
        params["cursor"] = cursor
    return ids


async def fetch_findings(session: aiohttp.ClientSession, base: str, token: str, view: MetricsView) -> Findings:
    f = Findings(
        dlq_depth=view.total("syncwatch_dlq_messages"),
        overdue_metric=view.total("syncwatch_transactions_overdue"),
        failed_metric=view.total("syncwatch_transactions_total", outcome="failed"),
        duplicates_metric=view.total("syncwatch_duplicate_applies_total"),
        retries=view.total("syncwatch_retries_total"),
        attempts_by_code=view.by("syncwatch_attempts_total", "status_code"),
        jitter_ratio=view.by("syncwatch_retry_jitter_ratio", "flow"),
    )
    f.overdue = await list_transactions(session, base, token, "overdue")
    # `pending` lists every open transaction; the ones past their deadline are the overdue ones.
    f.pending = await list_transactions(session, base, token, "pending") - f.overdue
    f.failed = await list_transactions(session, base, token, "failed")
    f.duplicates = await list_transactions(session, base, token, "duplicate")
    return f
