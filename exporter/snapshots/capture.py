"""From a payload log record to the snapshot stored: redact, cut at snapshots.max_bytes, hash.

Runs on the store thread, never on the event loop: redaction is the costly part of an intake.
"""

from __future__ import annotations

import hmac
import json
from collections import Counter
from typing import Any

from syncwatch.snapshots.otlp_logs import PayloadRecord
from syncwatch.snapshots.redaction import Redactor
from syncwatch.snapshots.store import Snapshot

# A body longer than snapshots.max_bytes + this is redacted on its head only (it is stored cut at
# max_bytes anyway): redaction costs at most this much per payload, however large the body.
REDACT_MARGIN = 64 * 1024


def body_bytes(body: Any) -> bytes:
    """The original body as bytes, for its size and keyed hash (what the sender's copy can be
    checked against, by whoever holds the key)."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    if body is None:
        return b""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def truncate(data: bytes, limit: int, content_type: str) -> bytes:
    cut = data[:limit]
    if content_type != "binary":
        cut = cut.decode("utf-8", "ignore").encode("utf-8")  # never end in half a character
    return cut


def capture(
    payloads: list[PayloadRecord], received: float, redactor: Redactor, hash_key: bytes, limit: int
) -> list[tuple[Snapshot, Counter[str]]]:
    """The snapshots of sorted payload records (direction and correlation ID present), each with
    the redactions made in it, by kind."""
    out: list[tuple[Snapshot, Counter[str]]] = []
    for p in payloads:
        assert p.corr is not None and p.direction is not None  # sorted out by the intake
        raw = body_bytes(p.body)
        if len(raw) > limit + REDACT_MARGIN:
            result = redactor.redact_head(raw, limit + REDACT_MARGIN)
        else:
            result = redactor.redact_body(p.body, raw)
        data = result.data
        truncated = len(data) > limit
        if truncated:
            data = truncate(data, limit, result.content_type)
        snap = Snapshot(
            corr=p.corr,
            direction=p.direction,
            received=received,
            time=p.time or received,
            trace_id=p.trace_id,
            span_id=p.span_id,
            flow=p.flow,
            destination=p.destination,
            content_type=result.content_type,
            size=len(raw),
            sha256=hmac.digest(hash_key, raw, "sha256"),
            truncated=truncated,
            redactions=sum(result.counts.values()),
            body=data,
        )
        out.append((snap, result.counts))
    return out
