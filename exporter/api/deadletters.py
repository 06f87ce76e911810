"""Dead letters in the query API, behind the same bearer token as /api/v1/transactions.

  GET /api/v1/dead-letters?collector=...&queue=...&linked=true|false&correlation_id=...&limit=...

Bodies are the redacted ones the book stored; `enabled` is false when no collector reads dead letters.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from syncwatch.api.routes import CLOSED_MESSAGE, iso
from syncwatch.config.models import Config

log = logging.getLogger("syncwatch.api")
MAX_LIMIT = 10_000


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def setup_dead_letter_api(app: web.Application, *, config: Config, dead_letters: Any = None) -> None:
    try:
        token = config.api.resolve_token()
    except OSError:
        token = None
    expected = token.encode() if token else None

    async def list_dead_letters(request: web.Request) -> web.Response:
        if expected is None:
            return _error(503, CLOSED_MESSAGE)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), expected
        ):
            return _error(
                401,
                "missing or wrong bearer token (Authorization: Bearer <api.token>)",
                **{"WWW-Authenticate": 'Bearer realm="syncwatch"'},
            )
        q = request.query
        linked = q.get("linked")
        if linked not in (None, "", "true", "false"):
            return _error(400, "linked must be true or false")
        try:
            limit = int(q.get("limit", "1000"))
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError
        except ValueError:
            return _error(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
        items: list[dict[str, Any]] = []
        if dead_letters is not None:
            items = await asyncio.to_thread(
                dead_letters.list,
                queue=q.get("queue") or None,
                linked={"true": True, "false": False}.get(linked or ""),
                corr=q.get("correlation_id") or None,
                collector=q.get("collector") or None,
                limit=limit,
            )
        for item in items:
            for key in ("dead_lettered_at", "first_seen", "last_seen"):
                item[key] = iso(item[key])
        body = {"enabled": dead_letters is not None, "count": len(items), "items": items}
        return web.Response(text=json.dumps(body, allow_nan=False), content_type="application/json")

    app.router.add_get("/api/v1/dead-letters", list_dead_letters)
