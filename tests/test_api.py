"""Query API: auth, the timeline of one transaction with its snapshots, reconciliation lists and pages.

The ledger rows are written with the schema's own DDL into a tmp database (the shape the ledger
writer produces), SQLite or PostgreSQL: every test that reads the ledger runs on both backends.
Snapshots go through the real SnapshotIntake.
"""

import asyncio
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from api_data import AUTH, NOW, TOKEN, TRACE, ledger_config, make_config, span
from snapshot_data import Clock, make_request, order_body

from syncwatch.api.routes import setup_api
from syncwatch.metrics.registry import Metrics
from syncwatch.settings import load_config
from syncwatch.snapshots import SnapshotIntake


def serve(tmp_path, config, scenario):
    """Run `scenario(client)` against the API on a real aiohttp server, snapshots included."""

    async def go():
        intake = SnapshotIntake(config, Metrics(), clock=Clock(NOW))
        await intake.start()
        await intake.export_logs(
            make_request(
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
                    "body": '{"doc":"4711"}',
                    "trace_id": bytes.fromhex(TRACE),
                    "span_id": bytes.fromhex(span(3)),
                },
                {
                    "corr": "ord-1",
                    "direction": "request",
                    "body": "first try",
                    "trace_id": bytes.fromhex(TRACE),
                    "span_id": bytes.fromhex(span(1)),
                },
                {"corr": "ord-1", "direction": "request", "body": "from an untraced worker", "span_id": b""},
                {"corr": "only-snap", "direction": "request", "body": "x"},
            )
        )
        app = web.Application()
        setup_api(app, config=config, snapshots=intake, clock=Clock(NOW))
        async with TestClient(TestServer(app)) as client:
            result = await scenario(client)
        await intake.stop()
        return result

    return asyncio.run(go())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.databases)])
def config(request, tmp_path):
    """The same ledger rows on each backend; the API reads whichever the config names."""
    return ledger_config(tmp_path, request.getfixturevalue("pg_db") if request.param == "postgresql" else None)


def test_401_without_or_with_a_wrong_token(tmp_path, config):
    async def scenario(client):
        codes = []
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Bearer {TOKEN}x"},
        ):
            for path in ("/api/v1/transactions/ord-1", "/api/v1/transactions?state=overdue"):
                r = await client.get(path, headers=headers)
                codes.append((r.status, r.headers.get("WWW-Authenticate"), "token" in (await r.json())["error"]))
        ok = await client.get("/api/v1/transactions/ord-1", headers=AUTH)
        return codes, ok.status

    codes, ok = serve(tmp_path, config, scenario)
    assert codes == [(401, 'Bearer realm="syncwatch"', True)] * 8 and ok == 200


def test_without_a_configured_token_the_api_stays_closed_and_says_how_to_open_it(tmp_path):
    config = make_config(tmp_path, token=None)

    async def scenario(client):
        r = await client.get("/api/v1/transactions?state=overdue", headers=AUTH)
        return r.status, (await r.json())["error"]

    status, message = serve(tmp_path, config, scenario)
    assert status == 503 and "api.token" in message and "SYNCWATCH_API__TOKEN" in message


def test_token_from_file_or_environment(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    (tmp_path / "a.yaml").write_text(f"api:\n  token_file: {token_file}\n")
    assert load_config(tmp_path / "a.yaml", environ={}).api.resolve_token() == TOKEN
    assert load_config(None, environ={"SYNCWATCH_API__TOKEN": "123456"}).api.resolve_token() == "123456"


def test_404_for_an_unknown_correlation_id(tmp_path, config):
    async def scenario(client):
        r = await client.get("/api/v1/transactions/nope", headers=AUTH)
        return r.status, await r.json()

    status, body = serve(tmp_path, config, scenario)
    assert status == 404 and "nope" in body["error"]


def test_timeline_per_destination_with_backoff_lag_and_linked_snapshots(tmp_path, config, caplog):
    async def scenario(client):
        r = await client.get("/api/v1/transactions/ord-1", headers=AUTH)
        return r.status, await r.json()

    with caplog.at_level(logging.INFO, logger="syncwatch.api"):
        status, body = serve(tmp_path, config, scenario)
    assert status == 200
    (erp,) = body["destinations"]
    assert (erp["destination"], erp["flow"], erp["source"], erp["state"], erp["lag_seconds"]) == (
        "erp",
        "orders",
        "storefront",
        "confirmed",
        42.0,
    )
    assert [(a["attempt"], a["code"], a["backoff_seconds"]) for a in erp["attempts"]] == [
        (1, "503", None),
        (2, "503", 2.0),
        (3, "201", 8.0),
    ]
    assert erp["attempts"][0]["start"] == "2027-01-15T08:00:01.000Z"
    assert [s["body"] for s in erp["attempts"][0]["snapshots"]] == ["first try"]
    third = erp["attempts"][2]["snapshots"]
    assert [s["direction"] for s in third] == ["request", "response"]
    assert third[0]["body"]["customer"]["password"].startswith("[REDACTED:password:")
    assert third[1]["body"] == {"doc": "4711"} and third[1]["body_encoding"] == "json"
    assert erp["confirmations"] == [
        {
            "trace_id": TRACE,
            "span_id": span(4),
            "start": "2027-01-15T08:00:40.000Z",
            "end": "2027-01-15T08:00:42.000Z",
            "idempotency_key": "ord-1:erp",
            "duplicate": False,
            "snapshots": [],
        }
    ]
    assert [s["body"] for s in body["unlinked_snapshots"]] == ["from an untraced worker"]
    # The read is logged with the correlation ID, never the payload.
    reads = [r.getMessage() for r in caplog.records if "payload snapshots read" in r.getMessage()]
    assert (
        len(reads) == 1
        and "correlation_id=ord-1" in reads[0]
        and "REDACTED" not in caplog.text
        and "first try" not in caplog.text
    )


def test_duplicate_and_failed_transactions_in_the_timeline(tmp_path, config):
    async def scenario(client):
        inv = await (await client.get("/api/v1/transactions/inv-7", headers=AUTH)).json()
        failed = await (await client.get("/api/v1/transactions/ord-9", headers=AUTH)).json()
        snap_only = await client.get("/api/v1/transactions/only-snap", headers=AUTH)
        return inv, failed, snap_only.status, await snap_only.json()

    inv, failed, status, snap_only = serve(tmp_path, config, scenario)
    (d,) = inv["destinations"]
    assert d["duplicate"] and d["applies"] == 2 and [c["duplicate"] for c in d["confirmations"]] == [False, True]
    (f,) = failed["destinations"]
    assert f["state"] == "failed" and f["failures"][0]["error"] == "retries_exhausted"
    assert status == 200 and snap_only["destinations"] == [] and len(snap_only["unlinked_snapshots"]) == 1


def test_reconciliation_lists_by_state_and_flow(tmp_path, config):
    async def scenario(client):
        out = {}
        for query in (
            "state=overdue",
            "state=overdue&flow=customers",
            "state=pending&flow=orders",
            "state=failed",
            "state=duplicate",
            "state=expired",
            "state=overdue&flow=prices",
        ):
            r = await client.get(f"/api/v1/transactions?{query}&limit=1000", headers=AUTH)
            out[query] = await r.json()
        return out

    out = serve(tmp_path, config, scenario)
    overdue = out["state=overdue"]["items"]
    assert len(overdue) == 26 and {i["state"] for i in overdue} == {"overdue"}
    assert overdue[0]["correlation_id"] == "cust-1"  # the longest overdue first
    late = next(i for i in overdue if i["correlation_id"] == "late-00")
    assert late["last_code"] == "429" and late["overdue_seconds"] == 3300.0 and late["attempts"] == 1
    assert [i["correlation_id"] for i in out["state=overdue&flow=customers"]["items"]] == ["cust-1"]
    pending = out["state=pending&flow=orders"]["items"]
    assert len(pending) == 28 and sum(i["state"] == "pending" for i in pending) == 3
    assert [(i["correlation_id"], i["last_code"]) for i in out["state=failed"]["items"]] == [("ord-9", "500")]
    assert [(i["correlation_id"], i["applies"]) for i in out["state=duplicate"]["items"]] == [("inv-7", 2)]
    assert out["state=expired"]["items"] == [] and out["state=overdue&flow=prices"]["count"] == 0


def test_pagination_walks_every_row_once(tmp_path, config):
    async def scenario(client):
        seen, cursor, pages = [], None, 0
        while True:
            q = "state=overdue&flow=orders&limit=10" + (f"&cursor={cursor}" if cursor else "")
            body = await (await client.get(f"/api/v1/transactions?{q}", headers=AUTH)).json()
            seen += [i["correlation_id"] for i in body["items"]]
            pages += 1
            cursor = body["next_cursor"]
            if not cursor:
                break
        bad = [
            (await client.get(f"/api/v1/transactions?{q}", headers=AUTH)).status
            for q in ("state=overdue&cursor=garbage", "state=lost", "state=overdue&limit=0", "state=overdue&limit=x")
        ]
        return seen, pages, bad

    seen, pages, bad = serve(tmp_path, config, scenario)
    assert seen == [f"late-{i:02d}" for i in range(25)] and pages == 3
    assert bad == [400, 400, 400, 400]


def test_refused_tokens_are_counted_per_surface(make_sidecar):
    """A guessing client or a rotated token shows on /metrics: every 401 of the API and the web view."""
    import urllib.error
    import urllib.request

    sc = make_sidecar({"api": {"token": TOKEN}})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        req = urllib.request.Request(sc.url + "/api/v1/transactions?state=overdue", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401
    req = urllib.request.Request(sc.url + "/ui/login", data=b"token=wrong&next=%2Fui%2F", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401
    ok = urllib.request.Request(
        sc.url + "/api/v1/transactions?state=overdue", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(ok, timeout=10) as r:
        assert r.status == 200
    assert sc.metric("syncwatch_auth_refusals_total", surface="api") == 3
    assert sc.metric("syncwatch_auth_refusals_total", surface="ui") == 1
