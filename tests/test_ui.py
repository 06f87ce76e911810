"""Web view over a real aiohttp server: the login cookie, the lists, one transaction's page, and
hostile data rendered as text. The ledger is the one tests/test_api.py builds (the writer's shape),
on SQLite and on PostgreSQL; snapshots go through the real SnapshotIntake."""

import asyncio
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from api_data import NOW, TOKEN, TRACE, ledger_config, make_config, span
from snapshot_data import Clock, make_request, order_body

from syncwatch.api.routes import setup_api
from syncwatch.metrics.registry import Metrics
from syncwatch.snapshots import SnapshotIntake
from syncwatch.ui import setup_ui
from syncwatch.ui.auth import COOKIE, safe_next
from syncwatch.ui.views import human

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.databases)])
def config(request, tmp_path):
    """The same ledger rows on each backend; the web view reads whichever the config names."""
    return ledger_config(tmp_path, request.getfixturevalue("pg_db") if request.param == "postgresql" else None)


def serve(config, scenario, token_login=True):
    async def go():
        intake = SnapshotIntake(config, Metrics(), clock=Clock(NOW))
        await intake.start()
        await intake.export_logs(
            make_request(
                {
                    "corr": "ord-1",
                    "direction": "request",
                    "body": '{"order_id": "SO-1", "qty": 1, "note": "first"}',
                    "trace_id": bytes.fromhex(TRACE),
                    "span_id": bytes.fromhex(span(1)),
                },
                {
                    "corr": "ord-1",
                    "direction": "request",
                    "body": order_body(),
                    "trace_id": bytes.fromhex(TRACE),
                    "span_id": bytes.fromhex(span(3)),
                },
                {
                    "corr": "ord-1",
                    "direction": "response",
                    "body": '{"doc": "' + HOSTILE.replace('"', "'") + '"}',
                    "trace_id": bytes.fromhex(TRACE),
                    "span_id": bytes.fromhex(span(3)),
                },
            )
        )
        app = web.Application()
        setup_api(app, config=config, snapshots=intake, clock=Clock(NOW))
        setup_ui(app, config=config, snapshots=intake, clock=Clock(NOW))
        async with TestClient(TestServer(app)) as client:
            if token_login:
                r = await client.post(
                    "/ui/login", data={"token": TOKEN, "next": "/ui/transactions?state=overdue"}, allow_redirects=False
                )
                assert r.status == 303
            result = await scenario(client)
        await intake.stop()
        return result

    return asyncio.run(go())


def rows(html: str) -> list[str]:
    return re.findall(r'<a class="tx" href="/ui/transactions/([^"]+)">', html)


def test_nothing_without_the_cookie_and_a_wrong_token_sees_nothing(config):
    async def scenario(client):
        out = {}
        for path in ("/ui/transactions?state=overdue", "/ui/transactions/ord-1", "/ui/dead-letters", "/ui/queues"):
            r = await client.get(path, allow_redirects=False)
            out[path] = (r.status, await r.text())
        r = await client.post("/ui/login", data={"token": "wrong", "next": "/ui/queues"}, allow_redirects=False)
        out["wrong"] = (r.status, await r.text(), r.cookies)
        client.session.cookie_jar.update_cookies({COOKIE: TOKEN})  # the raw token is not a session
        r = await client.get("/ui/transactions/ord-1")
        out["raw"] = (r.status, await r.text())
        return out

    out = serve(config, scenario, token_login=False)
    for path in ("/ui/transactions?state=overdue", "/ui/transactions/ord-1", "/ui/dead-letters", "/ui/queues"):
        status, html = out[path]
        assert status == 401
        assert 'name="token"' in html and "late-" not in html and "ord-1" not in html.split("next")[0]
    status, html, cookies = out["wrong"]
    assert status == 401 and "wrong token" in html and COOKIE not in cookies
    assert out["raw"][0] == 401 and "SO-1" not in out["raw"][1]


def test_login_sets_an_httponly_strict_cookie_and_returns_to_the_page_asked_for(config):
    async def scenario(client):
        r = await client.get("/ui/transactions?state=overdue&flow=orders", allow_redirects=False)
        html = await r.text()
        target = re.search(r'name="next" value="([^"]+)"', html).group(1).replace("&amp;", "&")
        r = await client.post("/ui/login", data={"token": TOKEN, "next": target}, allow_redirects=False)
        return r.status, r.headers["Location"], r.headers.getall("Set-Cookie")

    status, location, cookies = serve(config, scenario, token_login=False)
    assert status == 303 and location == "/ui/transactions?state=overdue&flow=orders"
    (cookie,) = cookies
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert TOKEN not in cookie


def test_next_never_leaves_the_web_view():
    for bad in (
        "https://evil.example/",
        "//evil.example/ui/",
        "/ui/\\evil",
        "/api/v1/transactions",
        "/ui/x\r\nSet-Cookie: a",
    ):
        assert safe_next(bad) == "/ui/transactions?state=overdue"
    assert safe_next("/ui/transactions?state=failed&flow=orders") == "/ui/transactions?state=failed&flow=orders"


def test_overdue_list_with_overdue_by_filters_and_paging(config):
    async def scenario(client):
        first = await (await client.get("/ui/transactions?state=overdue&flow=orders&limit=50")).text()
        other = await (await client.get("/ui/transactions?state=overdue&flow=customers")).text()
        failed = await (await client.get("/ui/transactions?state=failed")).text()
        bad = await client.get("/ui/transactions?state=overdue&cursor=xyz")
        return first, other, failed, (bad.status, await bad.text())

    first, other, failed, bad = serve(config, scenario)
    assert rows(first) == [f"late-{i:02d}" for i in range(25)]
    # late-00: deadline T0 + 300, now T0 + 3600: overdue by 55 minutes.
    assert ">55m 0s<" in first
    assert rows(other) == ["cust-1"]
    assert rows(failed) == ["ord-9"]
    assert bad[0] == 400 and "cursor is not one this API returned" in bad[1]


def test_paging_walks_every_row_once(config):
    async def scenario(client):
        seen, url = [], "/ui/transactions?state=overdue&limit=10"
        while url:
            html = await (await client.get(url)).text()
            seen += rows(html)
            m = re.search(r'<a id="next" href="([^"]+)"', html)
            url = m.group(1).replace("&amp;", "&") if m else None
        return seen

    seen = serve(config, scenario)
    # By deadline: cust-1's (T0 + 10) comes before the orders' (T0 + 300 + i).
    assert seen == ["cust-1"] + [f"late-{i:02d}" for i in range(25)]


def test_transaction_page_attempts_backoffs_payloads_and_the_diff(config):
    async def scenario(client):
        r = await client.get("/ui/transactions/ord-1")
        return r.status, r.headers, await r.text()

    status, headers, html = serve(config, scenario)
    assert status == 200
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    attempts = re.findall(
        r'<tr class="attempt"><td class="num">(\d+)</td>.*?<span class="badge code-(\w+)">(\w+)</span>.*?<td class="num">([^<]+)</td><td class="num">\d+</td></tr>',
        html,
        re.S,
    )
    # 503 at +1..+2, 503 at +4..+5 (backoff 2 s), 201 at +13..+14 (backoff 8 s).
    assert attempts == [("1", "server", "503", "-"), ("2", "server", "503", "2.0s"), ("3", "ok", "201", "8.0s")]
    assert "3 attempts within 12.0s" in html
    # Pretty-printed, redacted payloads; the secrets never reach the page.
    assert "&#34;order_id&#34;: &#34;SO-1&#34;" in html or "&#34;order_id&#34;: &#34;SO-1&#34;," in html
    for secret in ("hunter2", "4111111111111111", "jane.doe@example.com"):
        assert secret not in html
    # The second request's diff against the first.
    assert '<div class="del">-  &#34;qty&#34;: 1,</div>' in html
    assert '<div class="add">+  &#34;order_id&#34;: &#34;SO-1&#34;,</div>' not in html  # unchanged line
    # Hostile markup from a payload is text.
    assert "<script>" not in html and "&lt;script&gt;alert(" in html


def test_hostile_correlation_ids_render_as_text(tmp_path):
    import json
    import sqlite3

    from syncwatch.ledger.schema import DDL

    cfg = make_config(tmp_path)
    cfg.storage.data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(cfg.storage.ledger_path)
    conn.executescript(DDL)
    tl = {"attempts": [[TRACE, span(1), NOW - 50, NOW - 49, 1, HOSTILE, HOSTILE]]}
    conn.execute(
        "INSERT INTO open_tx (corr, dest, flow, source, changed_at, opened_at, deadline, attempts, timeline) VALUES (?,?,?,?,?,?,?,?,?)",
        (HOSTILE, HOSTILE, "orders", HOSTILE, NOW - 60, NOW - 60, NOW - 30, 1, json.dumps(tl)),
    )
    conn.commit()
    conn.close()

    async def scenario(client):
        listing = await (await client.get("/ui/transactions?state=overdue")).text()
        href = rows(listing)[0]
        page = await (await client.get("/ui/transactions/" + href)).text()
        return listing, page

    listing, page = serve(cfg, scenario)
    for html in (listing, page):
        assert "<script>" not in html and "<img" not in html
        assert "&lt;script&gt;" in html


def test_human_durations():
    assert [human(v) for v in (0.35, 12.44, 125, 3300, 93784, None, float("nan"))] == [
        "350ms",
        "12.4s",
        "2m 5s",
        "55m 0s",
        "1d 2h",
        "-",
        "-",
    ]


def test_closed_without_a_token(tmp_path):
    cfg = make_config(tmp_path, token=None)

    async def scenario(client):
        r = await client.get("/ui/transactions?state=overdue")
        return r.status, await r.text()

    status, html = serve(cfg, scenario, token_login=False)
    assert status == 503 and "no token configured" in html


def test_alerts_link_to_the_list_of_what_fired():
    from repo import alerts_gen as generate

    plain = {r["alert"]: r for g in generate.build_rules()["groups"] for r in g["rules"] if "alert" in r}
    assert all("ui_url" not in r["annotations"] for r in plain.values())  # the committed file stays as it was
    linked = {
        r["alert"]: r
        for g in generate.build_rules(ui_url="https://sw.example/")["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    ann = {name: r["annotations"].get("ui_url") for name, r in linked.items()}
    assert ann["SyncwatchTransactionsOverdue"] == (
        "https://sw.example/ui/transactions?state=overdue&flow={{ $labels.flow | urlquery }}"
    )
    assert (
        ann["SyncwatchRetriesExhausted"]
        == "https://sw.example/ui/transactions?state=failed&flow={{ $labels.flow | urlquery }}"
    )
    assert (
        ann["SyncwatchDeadLetterQueueNotEmpty"]
        == "https://sw.example/ui/dead-letters?queue={{ $labels.queue | urlquery }}"
    )
