"""/api/v1/audit: the payload audits' findings (both writes side by side, redacted) and the
ownership report's rows. Behind the same bearer token as the rest of the API."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from syncwatch.api.routes import CLOSED_MESSAGE, iso
from syncwatch.audit.store import db_path, idempotency_rows, list_events, report_rows
from syncwatch.config.durations import parse_duration
from syncwatch.config.models import Config

KINDS = ("conflict", "violation", "key_reuse", "duplicate_record")
MAX_LIMIT = 1000


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def setup_audit_api(
    app: web.Application, *, config: Config, snapshots: Any = None, clock: Callable[[], float] = time.time
) -> None:
    try:
        token = config.api.resolve_token()
    except OSError:
        token = None
    expected = token.encode() if token else None
    path = db_path(config.storage.data_dir)

    def authorize(request: web.Request) -> web.Response | None:
        if expected is None:
            return _error(503, CLOSED_MESSAGE)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), expected
        ):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer <api.token>)")
        return None

    def since_of(request: web.Request) -> float:
        text = request.query.get("since", "30d")
        try:
            return clock() - parse_duration(text)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f'{{"error": "since: {exc}"}}', content_type="application/json") from None

    async def flushed() -> None:
        auditor = getattr(snapshots, "auditor", None)
        if auditor is not None:
            await snapshots._run(auditor.flush)  # counts held in memory are written first

    async def findings(request: web.Request) -> web.Response:
        if (denied := authorize(request)) is not None:
            return denied
        q = request.query
        kind = q.get("kind")
        if kind is not None and kind not in KINDS:
            return _error(400, f"kind: one of {', '.join(KINDS)}")
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, f"limit: a number from 1 to {MAX_LIMIT}")
        since = since_of(request)
        await flushed()
        rows = await asyncio.to_thread(list_events, path, kind=kind, flow=q.get("flow"), since=since, limit=limit)
        items = []
        for r in rows:
            items.append(
                {
                    "kind": r["kind"],
                    "flow": r["flow"],
                    "field": r["field"],
                    "record": r["record"],
                    "owner": r["owner"],
                    "write": {
                        "writer": r["writer"],
                        "time": iso(r["time"]),
                        "correlation_id": r["corr"],
                        "value": r["value"],
                    },
                    "previous": {
                        "writer": r["prev_writer"],
                        "time": iso(r["prev_time"]),
                        "correlation_id": r["prev_corr"],
                        "value": r["prev_value"],
                    },
                }
            )
        return web.json_response({"count": len(items), "items": items})

    async def report(request: web.Request) -> web.Response:
        if (denied := authorize(request)) is not None:
            return denied
        since = since_of(request)
        await flushed()
        fields = await asyncio.to_thread(report_rows, path, since)
        idem = await asyncio.to_thread(idempotency_rows, path, since)
        return web.json_response({"since": iso(since), "fields": fields, "idempotency": idem})

    app.router.add_get("/api/v1/audit/findings", findings)
    app.router.add_get("/api/v1/audit/report", report)
