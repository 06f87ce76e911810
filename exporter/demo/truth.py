"""Ground truth, measured where it happened (the ERP's applies, the DLQ's contents, the storefront's
address book), and what syncwatch found, read through its query API and /metrics. The report
compares the two."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from syncwatch.demo.live import MetricsView
from syncwatch.demo.storefront import AddressWrite


@dataclass
class GroundTruth:
    sent: dict[str, str]  # record ID -> flow
    lost: set[str]  # sent, never applied at the ERP, not in the DLQ: silently lost
    dead_lettered: set[str]  # in the DLQ and never applied
    duplicates: set[str]  # applied more than once on an exactly-once flow
    dlq_depth: int
    applied: int
    # Orders in the storefront's database that never reached the ERP's (lost or dead-lettered).
    missing: set[str] = field(default_factory=set)
    # Customer IDs whose shipping address two systems changed within the sync window, and the ones
    # a system other than its owner changed (from the storefront's address book).
    conflicts: set[str] = field(default_factory=set)
    violations: set[str] = field(default_factory=set)

    @classmethod
    def measure(
        cls,
        sent: Mapping[str, str],
        applies: Mapping[str, int],
        dlq_bodies: list[dict[str, Any]],
        exactly_once: Mapping[str, bool],
        destination_orders: set[str] | None = None,
        address_writes: Iterable[AddressWrite] = (),
        sync_window: float = 0.0,
        owner: str = "storefront",
    ) -> GroundTruth:
        in_dlq = {b["id"] for b in dlq_bodies}
        applied = {i for i, n in applies.items() if n > 0}
        at_erp = applied if destination_orders is None else destination_orders
        conflicts, violations = write_conflicts(address_writes, sync_window, owner)
        return cls(
            sent=dict(sent),
            lost={i for i in sent if i not in applied and i not in in_dlq},
            dead_lettered={i for i in in_dlq if i not in applied},
            duplicates={i for i, n in applies.items() if n > 1 and exactly_once.get(sent.get(i, ""), True)},
            dlq_depth=len(dlq_bodies),
            applied=len(applied),
            missing={i for i, f in sent.items() if f == "orders" and i not in at_erp},
            conflicts=conflicts,
            violations=violations,
        )


def write_conflicts(writes: Iterable[AddressWrite], window: float, owner: str) -> tuple[set[str], set[str]]:
    """Brute force over every write in time order: a change by another system than the last writer
    within `window` is a conflict; a change by anyone but `owner` is a violation."""
    last: dict[str, AddressWrite] = {}
    conflicts: set[str] = set()
    violations: set[str] = set()
    for w in sorted(writes, key=lambda w: w.at):
        prev = last.get(w.customer_id)
        if prev is not None and prev.address != w.address:
            if prev.writer != w.writer and w.at - prev.at <= window:
                conflicts.add(w.customer_id)
            if w.writer != owner:
                violations.add(w.customer_id)
        last[w.customer_id] = w
    return conflicts, violations


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
    # From the reconciler (the storefront's and the ERP's databases) and the payload audits.
    missing: set[str] = field(default_factory=set)
    missing_metric: float = 0.0
    conflicts: set[str] = field(default_factory=set)
    violations: set[str] = field(default_factory=set)
    conflicts_metric: float = 0.0
    violations_metric: float = 0.0
    conflict_events: list[dict[str, Any]] = field(default_factory=list)


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


async def _get_json(session: aiohttp.ClientSession, url: str, token: str, params: dict[str, str]) -> Any:
    async with session.get(url, params=params, headers={"Authorization": f"Bearer {token}"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}: {(await resp.text())[:200]}")
        return await resp.json()


async def list_missing(session: aiohttp.ClientSession, base: str, token: str, flow: str) -> set[str]:
    """Source IDs of open `missing` findings from GET /api/v1/reconciliation, following pages."""
    ids: set[str] = set()
    params = {"kind": "missing", "flow": flow, "state": "open", "limit": "1000"}
    for _ in range(1000):
        doc = await _get_json(session, f"{base}/api/v1/reconciliation", token, params)
        ids.update(item["source_id"] for item in doc["items"])
        if not doc.get("next_cursor"):
            break
        params["cursor"] = doc["next_cursor"]
    return ids


async def list_audit(
    session: aiohttp.ClientSession, base: str, token: str, kind: str, flow: str
) -> list[dict[str, Any]]:
    doc = await _get_json(
        session, f"{base}/api/v1/audit/findings", token, {"kind": kind, "flow": flow, "limit": "1000"}
    )
    return list(doc["items"])


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
    f.missing_metric = view.total("syncwatch_reconcile_findings", flow="orders", kind="missing")
    f.missing = await list_missing(session, base, token, "orders")
    f.conflicts_metric = view.total("syncwatch_audit_conflicts_total", flow="customers")
    f.violations_metric = view.total("syncwatch_audit_violations_total", flow="customers")
    f.conflict_events = await list_audit(session, base, token, "conflict", "customers")
    f.conflicts = {e["record"] for e in f.conflict_events}
    f.violations = {e["record"] for e in await list_audit(session, base, token, "violation", "customers")}
    return f
