"""Query API on the sidecar's HTTP port: the per-transaction record and the reconciliation lists.

  GET /api/v1/transactions/{correlation_id}
  GET /api/v1/transactions?state=overdue|pending|failed|expired|duplicate&flow=...&limit=...&cursor=...

It serves customer data (payload snapshots, even redacted), so every route needs
`Authorization: Bearer <api.token>`. Without a configured token the API stays closed (503 with how
to set one). Each payload read is logged with the correlation ID, never the payload.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from datetime import datetime, timezone
from typing import Callable

from aiohttp import web

from .config import Config
from .ledger_queries import MAX_PAGE, STATES, BadCursor, LedgerQueries

log = logging.getLogger("syncwatch.api")

CLOSED_MESSAGE = ("the query API is closed: no token configured. Set api.token or api.token_file in the config "
                  "file, or the SYNCWATCH_API__TOKEN environment variable, and restart syncwatch")
TIME_FIELDS = ("start", "end", "changed_at", "opened_at", "deadline", "closed_at", "first_at", "last_at", "time", "received")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _with_iso_times(value):
    """Times as RFC 3339 UTC strings: readable in curl output, parseable in scripts."""
    if isinstance(value, dict):
        return {k: (iso(v) if k in TIME_FIELDS and isinstance(v, (int, float)) else _with_iso_times(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_iso_times(v) for v in value]
    return value


def snapshot_json(s) -> dict:
    out = {
        "direction": s.direction, "time": s.time, "received": s.received, "trace_id": s.trace_id.hex(),
        "span_id": s.span_id.hex(), "flow": s.flow, "destination": s.destination, "content_type": s.content_type,
        "size": s.size, "sha256": s.sha256.hex(), "truncated": s.truncated, "redactions": s.redactions,
    }
    if s.content_type == "binary":
        out["body_encoding"] = "base64"
        out["body"] = base64.b64encode(s.body).decode()
    else:
        text = s.body.decode("utf-8", "replace")
        out["body_encoding"] = "text"
        out["body"] = text
        if s.content_type == "json" and not s.truncated:
            try:
                out["body"] = json.loads(text)
                out["body_encoding"] = "json"
            except ValueError:
                pass
    return out


def _error(status: int, message: str, **headers) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def setup_api(app: web.Application, *, config: Config, snapshots=None, clock: Callable[[], float] = time.time) -> None:
    """Add the /api/v1 routes to the sidecar's HTTP app."""
    try:
        token = config.api.resolve_token()
    except OSError as exc:
        log.error("query API closed: cannot read api.token_file: %s", exc.strerror)
        token = None
    expected = token.encode() if token else None
    if expected is None:
        log.warning(CLOSED_MESSAGE)
    queries = LedgerQueries(config.storage.ledger_path, clock)

    def authorize(request: web.Request) -> web.Response | None:
        if expected is None:
            return _error(503, CLOSED_MESSAGE)
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest: the time taken does not tell how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer <api.token>)",
                          **{"WWW-Authenticate": 'Bearer realm="syncwatch"'})
        return None

    async def list_transactions(request: web.Request) -> web.Response:
        if (denied := authorize(request)) is not None:
            return denied
        q = request.query
        state = q.get("state")
        if state not in STATES:
            return _error(400, f"query parameter state must be one of: {', '.join(STATES)}")
        try:
            limit = int(q.get("limit", "100"))
            if not 1 <= limit <= MAX_PAGE:
                raise ValueError
        except ValueError:
            return _error(400, f"limit must be a whole number from 1 to {MAX_PAGE}")
        try:
            items, next_cursor = await asyncio.to_thread(queries.reconciliation, state, q.get("flow") or None, limit, q.get("cursor") or None)
        except BadCursor as exc:
            return _error(400, str(exc))
        return web.json_response(_with_iso_times({
            "state": state, "flow": q.get("flow") or None, "count": len(items), "items": items, "next_cursor": next_cursor,
        }))

    async def show_transaction(request: web.Request) -> web.Response:
        if (denied := authorize(request)) is not None:
            return denied
        corr = request.match_info["correlation_id"]
        record = await asyncio.to_thread(queries.timeline, corr)
        snaps, snapshot_error = [], None
        if snapshots is not None:
            try:
                snaps = await snapshots.find(corr)
            except Exception as exc:  # the ledger part is still worth answering with
                snapshot_error = getattr(exc, "message", None) or f"{type(exc).__name__}"
        if record is None and not snaps:
            if snapshot_error:
                return _error(503, f"no ledger record for this correlation ID, and the snapshot store failed: {snapshot_error}")
            return _error(404, f"no transaction with correlation ID {corr!r} (or it was swept after its retention)")
        if snaps:
            # Logged: who read which transaction's payloads. Never the payload itself.
            log.info("payload snapshots read: correlation_id=%s snapshots=%d client=%s", corr, len(snaps), request.remote)
        record = record or {"correlation_id": corr, "destinations": []}
        _attach_snapshots(record, [snapshot_json(s) for s in snaps])
        if snapshot_error:
            record["snapshot_error"] = snapshot_error
        return web.json_response(_with_iso_times(record))

    app.router.add_get("/api/v1/transactions", list_transactions)
    app.router.add_get("/api/v1/transactions/{correlation_id}", show_transaction)


def _attach_snapshots(record: dict, snaps: list[dict]) -> None:
    """Each snapshot goes under the attempt (or confirmation/failure) whose span it names; else
    under its destination; else in `unlinked_snapshots`."""
    by_span: dict[str, dict] = {}
    for dest in record["destinations"]:
        dest["snapshots"] = []
        for group in ("attempts", "confirmations", "failures"):
            for item in dest.get(group, []):
                item["snapshots"] = []
                if item.get("span_id"):
                    by_span[item["span_id"]] = item
    unlinked = []
    for snap in snaps:
        target = by_span.get(snap["span_id"]) if snap["span_id"] else None
        if target is not None:
            target["snapshots"].append(snap)
            continue
        dest = next((d for d in record["destinations"] if snap["destination"] and d["destination"] == snap["destination"]
                     and (not snap["flow"] or d["flow"] == snap["flow"])), None)
        (dest["snapshots"] if dest is not None else unlinked).append(snap)
    record["unlinked_snapshots"] = unlinked
