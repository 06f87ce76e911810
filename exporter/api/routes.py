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
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web

from syncwatch.config.models import Config
from syncwatch.ledger.read_model import MAX_PAGE, STATES, BadCursor
from syncwatch.ledger.reader import LedgerUnavailable, open_queries

log = logging.getLogger("syncwatch.api")

CLOSED_MESSAGE = (
    "the query API is closed: no token configured. Set api.token or api.token_file in the config "
    "file, or the SYNCWATCH_API__TOKEN environment variable, and restart syncwatch"
)
# syncwatch's own time fields, per object of the answers; payload bodies are never touched.
DESTINATION_TIMES = ("changed_at", "opened_at", "deadline", "closed_at")
SPAN_TIMES = ("start", "end")
LIST_TIMES = ("changed_at", "opened_at", "deadline", "closed_at", "first_at", "last_at")
# Seconds a client waits before asking again when the ledger cannot be read (its database is down).
LEDGER_RETRY_AFTER = "5"


def iso(ts: float | None) -> str | None:
    """RFC 3339 UTC with milliseconds; None when there is no such date (before year 1, after
    9999, not finite)."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError, TypeError):
        return None


def _raw_number(value: float):
    """A number as valid JSON: non-finite ones as JavaScript spells them."""
    if isinstance(value, int) or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _times_as_iso(obj: dict, keys: tuple) -> None:
    """Each numeric time under `keys` becomes an RFC 3339 string. A time no date can show
    (older versions accepted some) becomes null, with the stored number in `<key>_raw`."""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            text = iso(value)
            obj[key] = text
            if text is None:
                obj[key + "_raw"] = _raw_number(value)


def _finite_only(value) -> None:
    """Non-finite numbers left in ledger data (lags, backoffs, attempt numbers) become null,
    so that every answer is valid JSON. Iterative: ledger data is shallow, but never trusted."""
    stack = [value]
    while stack:
        node = stack.pop()
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in pairs:
            if isinstance(child, float) and not math.isfinite(child):
                node[key] = None
            elif isinstance(child, (dict, list)):
                stack.append(child)


def _format_record(record: dict) -> dict:
    for dest in record["destinations"]:
        _times_as_iso(dest, DESTINATION_TIMES)
        for group in ("attempts", "confirmations", "failures"):
            for item in dest.get(group, []):
                _times_as_iso(item, SPAN_TIMES)
    _finite_only(record)
    return record


def _format_items(items: list[dict]) -> list[dict]:
    for item in items:
        _times_as_iso(item, LIST_TIMES)
    _finite_only(items)
    return items


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: JSON's grammar, no double can hold it
        raise ValueError(f"{text} is out of range")
    return value


def snapshot_json(s) -> dict:
    out = {
        "direction": s.direction,
        "time": s.time,
        "received": s.received,
        "trace_id": s.trace_id.hex(),
        "span_id": s.span_id.hex(),
        "flow": s.flow,
        "destination": s.destination,
        "content_type": s.content_type,
        "size": s.size,
        "body_hmac_sha256": s.body_hmac.hex() or None,
        "truncated": s.truncated,
        "redactions": s.redactions,
    }
    _times_as_iso(out, ("time", "received"))
    if s.content_type == "binary":
        out["body_encoding"] = "base64"
        out["body"] = base64.b64encode(s.body).decode()
    else:
        text = s.body.decode("utf-8", "replace")
        out["body_encoding"] = "text"
        out["body"] = text
        if s.content_type == "json" and not s.truncated:
            # Shown as stored: parsed only to be embedded, never rewritten. What strict JSON
            # cannot carry (NaN, nesting too deep to encode again) stays text.
            try:
                out["body"] = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
                out["body_encoding"] = "json"
            except (ValueError, RecursionError):
                pass
    return out


def _dumps(record: dict) -> str:
    try:
        return json.dumps(record, allow_nan=False)
    except RecursionError:  # a payload nested too deeply to encode inside the record: show it as text
        for snap in _all_snapshots(record):
            if snap["body_encoding"] == "json":
                snap["body"], snap["body_encoding"] = json.dumps(snap["body"]), "text"
        return json.dumps(record, allow_nan=False)


def _all_snapshots(record: dict):
    yield from record.get("unlinked_snapshots", [])
    for dest in record["destinations"]:
        yield from dest.get("snapshots", [])
        for group in ("attempts", "confirmations", "failures"):
            for item in dest.get(group, []):
                yield from item.get("snapshots", [])


def _log_text(value: str) -> str:
    """A client-chosen string fit for one log line: control characters, quotes and non-ASCII
    escaped as in JSON, so a newline cannot start a forged line."""
    return json.dumps(value)[1:-1]


def _strict_dumps(value) -> str:
    return json.dumps(value, allow_nan=False)


def _error(status: int, message: str, **headers) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def ledger_unavailable(exc: LedgerUnavailable) -> web.Response:
    """503 + Retry-After: the ledger's database cannot answer now; the process stays up and the
    next request tries again. Logged with the reason (never the DSN)."""
    log.warning("query API: %s", exc)
    return _error(503, f"{exc}; retry later", **{"Retry-After": LEDGER_RETRY_AFTER})


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
    queries = open_queries(config, clock)

    def authorize(request: web.Request) -> web.Response | None:
        if expected is None:
            return _error(503, CLOSED_MESSAGE)
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # Header bytes that are not UTF-8 arrive as surrogate escapes: encoded back, they are
        # simply a wrong token. compare_digest: the time taken does not tell how much of a guess was right.
        given_bytes = given.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given_bytes, expected):
            return _error(
                401,
                "missing or wrong bearer token (Authorization: Bearer <api.token>)",
                **{"WWW-Authenticate": 'Bearer realm="syncwatch"'},
            )
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
            items, next_cursor = await asyncio.to_thread(
                queries.reconciliation, state, q.get("flow") or None, limit, q.get("cursor") or None
            )
        except BadCursor as exc:
            return _error(400, str(exc))
        except LedgerUnavailable as exc:
            return ledger_unavailable(exc)
        return web.json_response(
            {
                "state": state,
                "flow": q.get("flow") or None,
                "count": len(items),
                "items": _format_items(items),
                "next_cursor": next_cursor,
            },
            dumps=_strict_dumps,
        )

    async def show_transaction(request: web.Request) -> web.Response:
        if (denied := authorize(request)) is not None:
            return denied
        corr = request.match_info["correlation_id"]
        try:
            record = await asyncio.to_thread(queries.timeline, corr)
        except LedgerUnavailable as exc:
            return ledger_unavailable(exc)
        snaps, snapshot_error = [], None
        if snapshots is not None:
            try:
                snaps = await snapshots.find(corr)
            except Exception as exc:  # the ledger part is still worth answering with
                snapshot_error = getattr(exc, "message", None) or f"{type(exc).__name__}"
        if record is None and not snaps:
            if snapshot_error:
                return _error(
                    503, f"no ledger record for this correlation ID, and the snapshot store failed: {snapshot_error}"
                )
            return _error(404, f"no transaction with correlation ID {corr!r} (or it was swept after its retention)")
        if snaps:
            # Logged: who read which transaction's payloads. Never the payload itself.
            log.info(
                "payload snapshots read: correlation_id=%s snapshots=%d client=%s",
                _log_text(corr),
                len(snaps),
                request.remote,
            )
        record = record or {"correlation_id": corr, "destinations": []}

        def render() -> str:  # payload bodies are data: parsed and encoded off the loop
            _format_record(record)
            _attach_snapshots(record, [snapshot_json(s) for s in snaps])
            if snapshot_error:
                record["snapshot_error"] = snapshot_error
            return _dumps(record)

        return web.Response(text=await asyncio.to_thread(render), content_type="application/json")

    app.router.add_get("/api/v1/transactions", list_transactions)
    app.router.add_get("/api/v1/transactions/{correlation_id}", show_transaction)
    from syncwatch.api.reconcile import setup_reconcile_routes  # reconciliation findings (issue 14)

    setup_reconcile_routes(app, authorize, config)


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
        dest = next(
            (
                d
                for d in record["destinations"]
                if snap["destination"]
                and d["destination"] == snap["destination"]
                and (not snap["flow"] or d["flow"] == snap["flow"])
            ),
            None,
        )
        (dest["snapshots"] if dest is not None else unlinked).append(snap)
    record["unlinked_snapshots"] = unlinked
