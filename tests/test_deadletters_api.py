"""Dead letters in the API, the CLI and the web view: the book filled by a real read record (the
shape the collectors return), bodies through the real snapshot redactor, links through the ledger."""

import asyncio
import json
import time

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from api_data import TOKEN, make_config
from deadletter_data import CARD, ledger_with

from syncwatch.api.deadletters import setup_dead_letter_api
from syncwatch.cli import deadletters as cli
from syncwatch.collectors.deadletters import DeadLetter, DeadLetterRead
from syncwatch.dead_letters import book_for_config
from syncwatch.ui import setup_ui

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def letter(key, corr, body, reason="rejected"):
    return DeadLetter(key, corr, reason, "orders", time.time() - 90, 1, body, len(body), False)


def filled_book(tmp_path):
    config = make_config(tmp_path)
    ledger_with(config, "SO-1")
    book = book_for_config(config)
    book.record(
        "rabbit",
        [
            DeadLetterRead(
                "/",
                "orders.dlq",
                [
                    letter("m-1", "SO-1", json.dumps({"id": "SO-1", "card_number": CARD}).encode()),
                    letter("m-2", "SO-2<script>", b"<script>alert(1)</script>"),
                ],
                complete=True,
            )
        ],
    )
    return config, book


def serve(config, book, scenario):
    async def go():
        app = web.Application()
        setup_dead_letter_api(app, config=config, dead_letters=book)
        setup_ui(app, config=config, dead_letters=book)
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    return asyncio.run(go())


def test_api_lists_dead_letters_by_order_behind_the_token(tmp_path):
    config, book = filled_book(tmp_path)

    async def scenario(client):
        out = {}
        r = await client.get("/api/v1/dead-letters")
        out["none"] = r.status
        r = await client.get("/api/v1/dead-letters", headers={"Authorization": "Bearer wrong"})
        out["wrong"] = r.status
        out["all"] = await (await client.get("/api/v1/dead-letters", headers=AUTH)).json()
        out["unlinked"] = await (await client.get("/api/v1/dead-letters?linked=false", headers=AUTH)).json()
        out["bad"] = (await client.get("/api/v1/dead-letters?linked=maybe", headers=AUTH)).status
        return out

    out = serve(config, book, scenario)
    assert out["none"] == 401 and out["wrong"] == 401 and out["bad"] == 400
    items = out["all"]["items"]
    assert out["all"]["enabled"] is True
    assert [(i["correlation_id"], i["linked"], i["reason"], i["queue"]) for i in items] == [
        ("SO-1", True, "rejected", "orders.dlq"),
        ("SO-2<script>", False, "rejected", "orders.dlq"),
    ]
    assert CARD not in items[0]["body"] and "[REDACTED:card_number:" in items[0]["body"]
    assert items[0]["dead_lettered_at"].endswith("Z")
    assert [i["correlation_id"] for i in out["unlinked"]["items"]] == ["SO-2<script>"]
    text = cli.render(out["all"])
    assert "SO-1" in text and "2 dead letters, 1 not linked to a ledger transaction" in text


def test_web_view_shows_dead_letters_escaped_and_marks_the_transaction(tmp_path):
    config, book = filled_book(tmp_path)

    async def scenario(client):
        await client.post("/ui/login", data={"token": TOKEN, "next": "/ui/dead-letters"})
        page = await (await client.get("/ui/dead-letters")).text()
        overdue = await (await client.get("/ui/transactions?state=overdue")).text()
        tx = await (await client.get("/ui/transactions/SO-1")).text()
        return page, overdue, tx

    page, overdue, tx = serve(config, book, scenario)
    assert '<a href="/ui/transactions/SO-1"><code>SO-1</code></a>' in page
    assert 'SO-2&lt;script&gt; <span class="muted">(not in the ledger)</span>' in page.replace("</code>", "")
    assert "<script>" not in page and CARD not in page
    assert "dead-lettered</span>" in overdue and "SO-1" in overdue
    assert '<span class="badge dead-lettered">dead-lettered</span>' in tx
