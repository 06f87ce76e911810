"""aiohttp handlers of the web view. Every page but the login form needs the session cookie; a
wrong or missing one gets the login form and nothing else. Nothing here writes (GET only, besides
the login itself), so a forged cross-site request can learn nothing and change nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from syncwatch.api.routes import CLOSED_MESSAGE, _attach_snapshots, _log_text
from syncwatch.config.models import Config
from syncwatch.ledger.read_model import MAX_PAGE, STATES, BadCursor
from syncwatch.ledger.reader import LedgerUnavailable, open_queries
from syncwatch.ui import views
from syncwatch.ui.auth import COOKIE, cookie_ok, safe_next, session_value, token_ok
from syncwatch.ui.templates import render

log = logging.getLogger("syncwatch.ui")

HEADERS = {
    # No script runs, nothing loads from elsewhere, no framing (clickjacking), no caching of customer data.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LIMITS = (50, 100, 500, 1000)


def _page(html: str, status: int = 200) -> web.Response:
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers=HEADERS)


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def setup_ui(
    app: web.Application,
    *,
    config: Config,
    snapshots: Any = None,
    collectors: Any = None,
    dead_letters: Any = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Add /ui/ to the sidecar's HTTP app. `dead_letters`: the DeadLetterBook, when any collector reads them."""
    try:
        token_text = config.api.resolve_token()
    except OSError:
        token_text = None
    token = token_text.encode() if token_text else None
    queries = open_queries(config, clock)
    flows = sorted(config.flows)

    def base(active: str, **more: Any) -> dict[str, Any]:
        return {"nav": True, "states": STATES, "active": active, **more}

    def login_form(request: web.Request, error: str | None = None, status: int = 401) -> web.Response:
        target = safe_next(request.path_qs if request.method == "GET" else None)
        return _page(render("login", nav=False, states=STATES, active="", next=target, error=error), status)

    def denied(request: web.Request) -> web.Response | None:
        if token is None:
            return _page(render("closed", nav=False, states=STATES, active="", message=CLOSED_MESSAGE), 503)
        if not cookie_ok(request.cookies.get(COOKIE), token):
            return login_form(request)
        return None

    async def login(request: web.Request) -> web.Response:
        if token is None:
            return _page(render("closed", nav=False, states=STATES, active="", message=CLOSED_MESSAGE), 503)
        form = await request.post()
        given, target = form.get("token"), form.get("next")
        if not isinstance(given, str) or not token_ok(given, token):
            log.warning("web view: wrong token from %s", request.remote)
            html = render(
                "login",
                nav=False,
                states=STATES,
                active="",
                next=safe_next(target if isinstance(target, str) else None),
                error="wrong token",
            )
            return _page(html, 401)
        resp = _see_other(safe_next(target if isinstance(target, str) else None))
        resp.set_cookie(
            COOKIE, session_value(token), path="/ui/", httponly=True, samesite="Strict", secure=request.secure
        )
        return resp

    async def logout(request: web.Request) -> web.Response:
        resp = _see_other("/ui/")
        resp.del_cookie(COOKIE, path="/ui/")
        return resp

    async def to_slash(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/ui/")

    async def index(request: web.Request) -> web.Response:
        if (no := denied(request)) is not None:
            return no
        raise web.HTTPSeeOther("/ui/transactions?state=overdue")

    async def transactions(request: web.Request) -> web.Response:
        if (no := denied(request)) is not None:
            return no
        q = request.query
        state = q.get("state", "overdue")
        flow = q.get("flow") or None
        error = None
        if state not in STATES:
            error, state = f"state must be one of: {', '.join(STATES)}", "overdue"
        try:
            limit = int(q.get("limit", "100"))
            if not 1 <= limit <= MAX_PAGE:
                raise ValueError
        except ValueError:
            error, limit = f"rows must be a whole number from 1 to {MAX_PAGE}", 100
        cursor = q.get("cursor") or None
        items: list[dict[str, Any]] = []
        next_cursor = None
        status = 200
        if error is None:
            try:
                items, next_cursor = await asyncio.to_thread(queries.reconciliation, state, flow, limit, cursor)
            except BadCursor as exc:
                error, status = str(exc), 400
            except LedgerUnavailable as exc:
                log.warning("web view: %s", exc)
                error, status = f"{exc}; try again in a moment", 503
        else:
            status = 400
        marked = set()
        if dead_letters is not None and items:
            marked = await asyncio.to_thread(dead_letters.dead_lettered, {it["correlation_id"] for it in items})

        def url(**more: Any) -> str:
            params = {"state": state, "flow": flow, "limit": limit if limit != 100 else None, **more}
            return "/ui/transactions?" + urlencode({k: v for k, v in params.items() if v is not None})

        def render_page() -> str:
            rows = []
            for it in items:
                rows.append(
                    {
                        **it,
                        "href": quote(it["correlation_id"], safe=""),
                        "overdue_by": views.human(it.get("overdue_seconds")) if it.get("overdue_seconds") else "-",
                        "deadline_at": views.when(it.get("deadline")),
                        "changed": views.when(it.get("changed_at")),
                        "closed": views.when(it.get("closed_at")),
                        "first": views.when(it.get("first_at")),
                        "last": views.when(it.get("last_at")),
                        "dead_lettered": it["correlation_id"] in marked,
                    }
                )
            return render(
                "list",
                **base(state),
                state=state,
                flow=flow,
                flows=flows,
                limit=limit,
                items=rows,
                error=error,
                cursor=cursor,
                first_url=url(),
                next_url=url(cursor=next_cursor) if next_cursor else None,
            )

        return _page(await asyncio.to_thread(render_page), status)

    async def transaction(request: web.Request) -> web.Response:
        if (no := denied(request)) is not None:
            return no
        corr = request.match_info["correlation_id"]
        try:
            record = await asyncio.to_thread(queries.timeline, corr)
        except LedgerUnavailable as exc:
            log.warning("web view: %s", exc)
            return _page(render("unavailable", **base(""), message=f"{exc}; try again in a moment"), 503)
        snaps: list[Any] = []
        snapshot_error = None
        if snapshots is not None:
            try:
                snaps = await snapshots.find(corr)
            except Exception as exc:  # the ledger part is still worth showing
                snapshot_error = getattr(exc, "message", None) or type(exc).__name__
        if snaps:
            log.info(
                "payload snapshots read (web view): correlation_id=%s snapshots=%d client=%s",
                _log_text(corr),
                len(snaps),
                request.remote,
            )
        letters = await asyncio.to_thread(dead_letters.list, corr=corr) if dead_letters is not None else []
        now = clock()

        def render_page() -> str:
            rec = record or {"correlation_id": corr, "destinations": []}
            shown = [views.snapshot_view(s) for s in snaps]
            views.request_diffs(shown)
            _attach_snapshots(rec, shown)
            dests = []
            for d in rec["destinations"]:
                attempts = []
                for a in d["attempts"]:
                    start, end = a.get("start"), a.get("end")
                    took = end - start if isinstance(start, (int, float)) and isinstance(end, (int, float)) else None
                    attempts.append(
                        {
                            **a,
                            "start_at": views.when(start),
                            "took": views.human(took),
                            "backoff": views.human(a.get("backoff_seconds")),
                            "cls": views.code_class(a.get("code"), a.get("error")),
                        }
                    )
                deadline = d.get("deadline")
                overdue = now - deadline if d["state"] == "overdue" and isinstance(deadline, (int, float)) else None
                dests.append(
                    {
                        **d,
                        "attempts": attempts,
                        "axis": views.axis(d, now),
                        "storm": views.storm(d["attempts"]),
                        "changed": views.when(d.get("changed_at")),
                        "opened": views.when(d.get("opened_at")),
                        "deadline_at": views.when(deadline),
                        "overdue_by": views.human(overdue) if overdue else None,
                        "lag": views.human(d.get("lag_seconds")) if d.get("lag_seconds") is not None else None,
                        "dead_lettered": bool(letters) and d["state"] not in ("failed", "confirmed"),
                        "confirmations": [{**c, "at": views.when(c.get("end"))} for c in d["confirmations"]],
                        "failures": [{**f, "at": views.when(f.get("end"))} for f in d["failures"]],
                        "snapshots": _all_snapshots(d),
                    }
                )
            return render(
                "tx",
                **base(""),
                corr=corr,
                dests=dests,
                unlinked=rec.get("unlinked_snapshots", []),
                snapshot_error=snapshot_error,
                dead_letters=_letters_view(letters, now),
            )

        status = 404 if record is None and not snaps and not letters else 200
        return _page(await asyncio.to_thread(render_page), status)

    async def dead_letter_list(request: web.Request) -> web.Response:
        if (no := denied(request)) is not None:
            return no
        queue = request.query.get("queue") or None
        linked = request.query.get("linked") or None
        letters: list[dict[str, Any]] = []
        if dead_letters is not None:
            flag = {"true": True, "false": False}.get(linked or "")
            letters = await asyncio.to_thread(dead_letters.list, queue=queue, linked=flag)
        now = clock()
        html = await asyncio.to_thread(  # bodies are data: escaped off the loop
            lambda: render(
                "dead_letters",
                **base("dead-letters"),
                enabled=dead_letters is not None,
                queue=queue,
                linked=linked,
                letters=_letters_view(letters, now),
            )
        )
        return _page(html)

    async def queues_page(request: web.Request) -> web.Response:
        if (no := denied(request)) is not None:
            return no
        letters = await asyncio.to_thread(dead_letters.list) if dead_letters is not None else []
        now = clock()
        shown = []
        for runner in getattr(collectors, "runners", []):
            sample = runner.last_sample
            mine = [letter for letter in letters if letter["collector"] == runner.name]
            shown.append(
                {
                    "name": runner.name,
                    "up": runner.up,
                    "error": str(runner.last_error) if runner.last_error else None,
                    "queues": [
                        {
                            "namespace": q.namespace,
                            "queue": q.queue,
                            "messages": f"{q.messages:g}",
                            "in_flight": "-" if q.in_flight is None else f"{q.in_flight:g}",
                            "oldest": views.human(q.oldest_message_age_seconds),
                            "consumers": "-" if q.consumers is None else f"{q.consumers:g}",
                        }
                        for q in (sample.queues if sample else [])
                    ],
                    "dlqs": [
                        {
                            "namespace": d.namespace,
                            "queue": d.queue,
                            "messages": f"{d.messages:g}",
                            "sources": ", ".join(sorted(d.source_queues)) or "-",
                        }
                        for d in (sample.dlqs if sample else [])
                    ],
                    "letters": _letters_view(mine, now),
                }
            )
        return _page(await asyncio.to_thread(lambda: render("queues", **base("queues"), collectors=shown)))

    app.router.add_get("/ui", to_slash)
    app.router.add_get("/ui/", index)
    app.router.add_post("/ui/login", login)
    app.router.add_get("/ui/logout", logout)
    app.router.add_get("/ui/transactions", transactions)
    app.router.add_get("/ui/transactions/{correlation_id}", transaction)
    app.router.add_get("/ui/dead-letters", dead_letter_list)
    app.router.add_get("/ui/queues", queues_page)


def _all_snapshots(dest: dict[str, Any]) -> list[dict[str, Any]]:
    """A destination's snapshots in time order, each labelled with the attempt it belongs to."""
    out = list(dest.get("snapshots", []))
    for a in dest.get("attempts", []):
        for s in a.get("snapshots", []):
            out.append({**s, "attempt": a.get("attempt")})
    for group in ("confirmations", "failures"):
        for item in dest.get(group, []):
            out.extend(item.get("snapshots", []))
    return sorted(out, key=lambda s: s["t"])


def _letters_view(letters: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    out = []
    for letter in letters:
        at = letter.get("dead_lettered_at")
        out.append(
            {
                **letter,
                "href": quote(letter["correlation_id"], safe="") if letter.get("correlation_id") else "",
                "age": views.human(now - at) if isinstance(at, (int, float)) else "-",
            }
        )
    return out
