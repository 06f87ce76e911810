"""Findings of single payloads: ownership conflicts and violations, idempotency-key reuse and
duplicate destination records. Split from the Auditor, which owns the thread, the counts and
audit.db; everything here runs on that audit thread."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

from syncwatch.audit.metrics import AuditMetrics
from syncwatch.audit.ownership import MISSING, UNMAPPED, FlowMap, ValueHasher, get_path, scalar_text, without
from syncwatch.audit.tracker import CONFLICT, LatestByKey, WriteTracker
from syncwatch.snapshots.otlp_logs import PayloadRecord
from syncwatch.snapshots.store import Snapshot

MAX_TEXT = 200  # characters of a redacted value or ID kept in a finding


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


class PayloadAudit:
    """Turns one stored payload into write counts and findings, against the trackers it shares
    with the Auditor (which reports their sizes and evictions)."""

    def __init__(
        self, hasher: ValueHasher, tracker: WriteTracker, keys: LatestByKey, record_ids: LatestByKey, m: AuditMetrics
    ) -> None:
        self.hash = hasher
        self.tracker = tracker
        self.keys = keys
        self.record_ids = record_ids
        self.m = m

    def one(
        self,
        fmap: FlowMap,
        snap: Snapshot,
        rec: PayloadRecord,
        events: list[dict[str, Any]],
        counts: dict[tuple[int, str, str, str, str], list[int]],
    ) -> None:
        body: Any = MISSING
        if snap.content_type == "json" and not snap.truncated:
            try:
                body = orjson.loads(snap.body)
            except orjson.JSONDecodeError:
                body = MISSING
        t = snap.time
        if snap.direction == "response":
            record_id = rec.record_id
            if record_id is None and fmap.record_id_steps is not None and body is not MISSING:
                record_id = scalar_text(get_path(body, fmap.record_id_steps))
            if record_id is not None:
                self._record_id(fmap, snap, record_id[:MAX_TEXT], events)
            return
        if body is MISSING:
            self.m.skipped.labels("truncated" if snap.truncated else "not_json").inc()
            return
        key = rec.idempotency_key
        if key is None and fmap.key_steps is not None:
            key = scalar_text(get_path(body, fmap.key_steps))
        if key is not None:
            if fmap.key_ignore:  # the redacted body without its volatile fields, keyed-hashed
                kept = body
                for steps in fmap.key_ignore:
                    kept = without(kept, steps)
                digest = f"{self.hash(kept) & 0xFFFF_FFFF_FFFF_FFFF:016x}"
            else:
                digest = snap.sha256.hex()[:16]
            prev_key = self.keys.swap((fmap.name, key), digest, snap.corr, t)
            if prev_key is not None:
                self.m.key_reuse.labels(fmap.name).inc()
                events.append(
                    {
                        "kind": "key_reuse",
                        "flow": fmap.name,
                        "record": _text(key),
                        "writer": rec.source,
                        "time": t,
                        "corr": snap.corr,
                        "value": digest,
                        "prev_time": prev_key[2],
                        "prev_corr": prev_key[1],
                        "prev_value": prev_key[0],
                    }
                )
        if not rec.source:
            self.m.skipped.labels("no_writer").inc()
            return
        record = fmap.record_key(body, snap.corr)
        if record is None:
            self.m.skipped.labels("no_record_key").inc()
            return
        writer = rec.source[:MAX_TEXT]
        values = list(fmap.values(body, t))
        h = self.hash
        found = self.tracker.observe_record(
            fmap.name, record, writer, t, snap.corr, fmap.window, [(name, h(v), owner) for name, _, v, owner in values]
        )
        day = int(t // 86400)
        for name, label, _v, _owner in values:
            ckey = (day, fmap.name, name, writer, label)
            c = counts.get(ckey)
            if c is None:
                c = counts[ckey] = [0, 0, 0]
            c[0] += 1
        if not found:
            return
        by_name = {name: (v, owner) for name, _, v, owner in values}
        for name, kind, prev in found:
            value, owner = by_name[name]
            label = name if fmap.fields else UNMAPPED
            counts[(day, fmap.name, name, writer, label)][1 if kind == CONFLICT else 2] += 1
            events.append(
                {
                    "kind": kind,
                    "flow": fmap.name,
                    "field": name,
                    "record": _text(record),
                    "writer": writer,
                    "owner": owner,
                    "time": t,
                    "corr": snap.corr,
                    "value": _text(value),
                    "prev_writer": prev[2],
                    "prev_time": prev[0],
                    "prev_corr": prev[3],
                    "_path": name,
                }
            )

    def _record_id(self, fmap: FlowMap, snap: Snapshot, record_id: str, events: list[dict[str, Any]]) -> None:
        self.record_id_found(fmap.name, snap.corr, snap.destination, record_id, snap.time, events)

    def record_id_found(
        self, flow: str, corr: str, destination: str | None, record_id: str, t: float, events: list[dict[str, Any]]
    ) -> None:
        # Per destination: a customers change lands in two systems, each with its own record ID.
        prev = self.record_ids.swap((flow, corr, destination or ""), record_id, corr, t)
        if prev is None:
            return
        self.m.duplicate_records.labels(flow).inc()
        events.append(
            {
                "kind": "duplicate_record",
                "flow": flow,
                "record": corr,
                "writer": destination,
                "time": t,
                "corr": corr,
                "value": record_id,
                "prev_time": prev[2],
                "prev_corr": prev[1],
                "prev_value": prev[0],
            }
        )


def fill_previous(
    events: list[dict[str, Any]], lookup: Callable[[str], list[Snapshot]], maps: dict[str, FlowMap]
) -> None:
    """The earlier write's redacted value, read back from its snapshot (findings are rare;
    at most 100 look-ups per batch, the rest show only the correlation ID)."""
    cache: dict[str, list[Snapshot]] = {}
    for e in events[:100]:
        path = e.pop("_path", None)
        if path is None or not e.get("prev_corr"):
            continue
        fmap = maps[e["flow"]]
        corr = e["prev_corr"]
        if corr not in cache:
            try:
                cache[corr] = lookup(corr)
            except Exception:  # the snapshot store failing costs the side-by-side value only
                cache[corr] = []
        for s in cache[corr]:
            if s.direction != "request" or s.time != e["prev_time"] or s.content_type != "json":
                continue
            try:
                body = json.loads(s.body)
            except ValueError:
                continue
            for name, _label, value, _owner in fmap.values(body, s.time):
                if name == path:
                    e["prev_value"] = _text(value)
            break
    for e in events[100:]:
        e.pop("_path", None)
