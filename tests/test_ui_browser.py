"""The web view in a real Chromium (Debian's package, driven by Playwright; no browser download),
against a real sidecar with a RabbitMQ collector reading dead letters: open the overdue list from
the alert's link, log in, open a transaction, see its attempts and payloads, see the order in the
DLQ; a wrong token sees nothing. Screenshots go to tmp_path, or to docs/ with
SYNCWATCH_SCREENSHOTS=docs (how the README's were made)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import quote_plus

import pika
import pytest
from otel_helpers import Integration, now
from otlp_raw import post
from rabbitmq_broker import amqp
from repo import alerts_gen
from snapshot_data import make_request

pytestmark = [pytest.mark.rabbitmq, pytest.mark.e2e]  # a real browser (Debian's chromium) and broker
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
TOKEN = "browser-test-token-42"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def shots(tmp_path) -> Path:
    return ROOT / "docs" if os.environ.get("SYNCWATCH_SCREENSHOTS") == "docs" else tmp_path


@pytest.fixture
def browser():
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (scripts/system-deps.sh installs it)")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: the tests run as root in a container, where Chromium's sandbox cannot start.
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def feed(sidecar) -> None:
    """SO-1001: three 503s with growing backoffs, never confirmed (overdue); SO-1002 overdue with no
    attempt; SO-1003 confirmed. Payloads of SO-1001's requests, the second changed."""
    it = Integration(sidecar)
    t0 = now()
    it.source("SO-1001", "orders", t0 - 900)
    for n, (start, code) in enumerate(((t0 - 898, 503), (t0 - 890, 503), (t0 - 860, 503)), 1):
        it.attempt("SO-1001", "orders", "erp", start, start + 1.5, code=code, resend=n - 1 or None)
    it.source("SO-1002", "orders", t0 - 700)
    it.source("SO-1003", "orders", t0 - 60)
    it.attempt("SO-1003", "orders", "erp", t0 - 59, t0 - 58, code=201)
    it.confirm("SO-1003", "orders", "erp", t0 - 58, t0 - 57)
    it.close()
    where = {"syncwatch.flow": "orders", "syncwatch.destination": "erp"}
    first = {"order_id": "SO-1001", "lines": [{"sku": "A-1", "qty": 2}], "customer": {"email": "jane@example.com"}}
    second = {**first, "lines": [{"sku": "A-1", "qty": 3}], "note": "<script>alert('x')</script>"}
    status, _, _ = post(
        sidecar.otlp_http + "/v1/logs",
        make_request(
            {"corr": "SO-1001", "direction": "request", "body": json.dumps(first), "attrs": where},
            {"corr": "SO-1001", "direction": "request", "body": json.dumps(second), "attrs": where},
            {"corr": "SO-1001", "direction": "response", "body": '{"error": "ERP busy"}', "attrs": where},
        ).SerializeToString(),
    )
    assert status == 200


def dead_letter(vhost_name: str) -> pika.adapters.blocking_connection.BlockingChannel:
    ch = amqp(vhost_name).channel()
    ch.exchange_declare("orders.dlx", "direct")
    ch.queue_declare("orders.dlq")
    ch.queue_bind("orders.dlq", "orders.dlx", "orders")
    ch.queue_declare(
        "orders", arguments={"x-dead-letter-exchange": "orders.dlx", "x-dead-letter-routing-key": "orders"}
    )
    ch.basic_publish("", "orders", json.dumps({"order": {"id": "SO-1001"}}).encode())
    method, _, _ = ch.basic_get("orders")
    ch.basic_reject(method.delivery_tag, requeue=False)
    return ch


def test_from_the_alert_link_to_the_lost_order(make_sidecar, vhost, browser, shots):
    ch = dead_letter(vhost)
    sc = make_sidecar(
        {
            "api": {"token": TOKEN},
            "sampling": {"interval": "2s", "fast_interval": "2s"},
            "collectors": [
                {
                    "type": "rabbitmq",
                    "name": "rabbit",
                    "vhosts": [vhost],
                    "queues": ["orders"],
                    "timeout": "1s",
                    "dead_letters": {"enabled": True, "correlation": {"json_path": "$.order.id"}},
                }
            ],
        }
    )
    feed(sc)
    sc.wait_for("syncwatch_transactions_overdue", 2, timeout=10, flow="orders", source="storefront", destination="erp")
    # The link exactly as Alertmanager renders the overdue alert's annotation for flow="orders".
    rules = alerts_gen.build_rules(ui_url=sc.url)
    (overdue,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "SyncwatchTransactionsOverdue"]
    link = overdue["annotations"]["ui_url"].replace("{{ $labels.flow | urlquery }}", quote_plus("orders"))
    assert link == sc.url + "/ui/transactions?state=overdue&flow=orders"

    # A wrong token sees the login form again, and nothing else.
    wrong = browser.new_context(viewport={"width": 1280, "height": 800})
    page = wrong.new_page()
    page.goto(link)
    page.fill("#token", "not-the-token")
    page.click("#login")
    assert page.inner_text("#login-error") == "wrong token"
    assert "SO-1001" not in page.content()
    page.screenshot(path=str(shots / "ui-login-wrong-token.png"))
    page.goto(sc.url + "/ui/transactions/SO-1001")
    # Only the login form (its hidden `next` field holds the address asked for, nothing from the ledger).
    assert "SO-1001" not in page.inner_text("body") and page.locator("#token").count() == 1
    assert page.locator("tr.attempt, pre.payload, #corr").count() == 0
    assert wrong.cookies() == []
    wrong.close()

    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.goto(link)
    page.screenshot(path=str(shots / "ui-login.png"))
    page.fill("#token", TOKEN)
    page.click("#login")
    page.wait_for_selector("#list")
    assert page.url == link
    (cookie,) = ctx.cookies()
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    rows = page.locator("#list tbody tr")
    assert [rows.nth(i).locator("a.tx").inner_text() for i in range(rows.count())] == ["SO-1001", "SO-1002"]
    first = rows.nth(0).locator("td").all_inner_texts()
    assert first[1:4] == ["orders", "storefront", "erp"]
    assert first[4].startswith("10m")  # overdue by: 900 s since the change, 300 s deadline -> 10 minutes
    assert first[7:9] == ["3", "503"]
    page.screenshot(path=str(shots / "ui-overdue.png"), full_page=True)

    page.click("text=SO-1001")
    page.wait_for_selector("#corr")
    attempts = page.locator("tr.attempt")
    assert attempts.count() == 3
    assert [attempts.nth(i).locator("td").nth(3).inner_text() for i in range(3)] == ["503", "503", "503"]
    assert [attempts.nth(i).locator("td").nth(5).inner_text() for i in range(3)] == ["-", "6.5s", "28.5s"]
    assert page.locator(".axis .bar.server").count() == 3
    assert "3 attempts within 38.0s" in page.inner_text(".storm")
    payloads = page.locator("pre.payload").all_inner_texts()
    assert len(payloads) == 3
    assert '"order_id": "SO-1001"' in payloads[0] and "jane@example.com" not in "".join(payloads)
    assert "<script>alert('x')</script>" in payloads[1]  # shown as text, never run
    diff = page.locator(".diff pre").first.inner_text()
    assert '-      "qty": 2' in diff and '+      "qty": 3' in diff
    page.screenshot(path=str(shots / "ui-transaction.png"), full_page=True)

    # The order in the DLQ, named, linked, and the transaction marked.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page.goto(sc.url + "/ui/dead-letters")
        if page.locator("tr.letter").count():
            break
        time.sleep(1)
    letters = page.locator("tr.letter")
    assert letters.count() == 1
    cells = letters.nth(0).locator("td").all_inner_texts()
    assert cells[0] == "SO-1001" and cells[2] == "orders.dlq" and cells[3] == "orders" and cells[4] == "rejected"
    page.screenshot(path=str(shots / "ui-dead-letters.png"), full_page=True)
    page.goto(sc.url + "/ui/transactions/SO-1001")
    assert page.locator(".badge.dead-lettered").count() == 1
    page.goto(sc.url + "/ui/queues")
    assert "orders.dlq" in page.inner_text("main")
    page.screenshot(path=str(shots / "ui-queues.png"), full_page=True)
    ctx.close()
    assert ch.queue_declare("orders.dlq", passive=True).method.message_count == 1  # still there
    ch.connection.close()
