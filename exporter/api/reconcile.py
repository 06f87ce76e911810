"""Query API of reconciliation findings, behind the same token as the rest of /api/v1:

  GET /api/v1/reconciliation?kind=missing|duplicated|never_traced|late&flow=&reconciler=
      &state=open|resolved|all&limit=&cursor=

Read from the findings file with a read-only connection of its own, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from aiohttp import web

from syncwatch.config.models import Config
from syncwatch.ledger.read_model import BadCursor
from syncwatch.reconcile.base import KINDS
from syncwatch.reconcile.store import MAX_PAGE, list_findings, store_path

STATES = ("open", "resolved", "all")
TIMES = ("changed_at", "first_seen", "last_seen", "resolved_at", "arrived_at")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def setup_reconcile_routes(
    app: web.Application, authorize: Callable[[web.Request], web.Response | None], config: Config
) -> None:
    path = store_path(config.storage.data_dir)
    from syncwatch.api.routes import _times_as_iso

    async def findings(request: web.Request) -> web.Response:
        if (denied := authorize(request)) is not None:
            return denied
        q = request.query
        kind = q.get("kind") or None
        if kind is not None and kind not in KINDS:
            return _error(400, f"kind must be one of: {', '.join(KINDS)}")
        state = q.get("state", "open")
        if state not in STATES:
            return _error(400, f"state must be one of: {', '.join(STATES)}")
        try:
            limit = int(q.get("limit", "100"))
            if not 1 <= limit <= MAX_PAGE:
                raise ValueError
        except ValueError:
            return _error(400, f"limit must be a whole number from 1 to {MAX_PAGE}")
        try:
            items, next_cursor = await asyncio.to_thread(
                list_findings,
                path,
                kind=kind,
                flow=q.get("flow") or None,
                reconciler=q.get("reconciler") or None,
                state=state,
                limit=limit,
                cursor=q.get("cursor") or None,
            )
        except BadCursor as exc:
            return _error(400, str(exc))
        for item in items:
            _times_as_iso(item, TIMES)
        body = {"kind": kind, "state": state, "count": len(items), "items": items, "next_cursor": next_cursor}
        return web.json_response(body, dumps=lambda v: json.dumps(v, allow_nan=False))

    app.router.add_get("/api/v1/reconciliation", findings)
