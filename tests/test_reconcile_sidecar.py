"""Issue 14's proof, end to end: a real sidecar reconciles the flash sale (storefront in PostgreSQL,
ERP in MariaDB) while 20 of the orders also flowed through traced spans; exact counts in /metrics,
the API and the CLI, agreement with the ledger on the traced ones, and four broken reconcilers
counted by reason beside it with the sidecar healthy. The flash sale runs with the ledger in SQLite
and in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from otel_helpers import Integration
from pg_support import scratch_database, storage_config
from reconcile_support import SOURCE_QUERY, FlashSale, my_admin, reconciler_config, unique
from sidecar import free_port

from syncwatch.cli.main import main as cli_main

TOKEN = "reconcile-test-token-14"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PASSWORD = "wrong-Secret-14"


@pytest.fixture
def erp_user(dbs):
    user = unique("sw_ro")[:30]
    asyncio.run(my_admin(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-Secret-14'"))
    yield user
    asyncio.run(my_admin(f"DROP USER IF EXISTS '{user}'@'%'"))


def api(sc, path):
    status, body = sc.get(path, headers=AUTH)
    assert status == 200, body
    return json.loads(body)


def all_findings(sc, kind):
    out, cursor = {}, None
    while True:
        page = api(sc, f"/api/v1/reconciliation?kind={kind}&limit=1000" + (f"&cursor={cursor}" if cursor else ""))
        out.update({i["source_id"]: i for i in page["items"]})
        cursor = page["next_cursor"]
        if not cursor:
            return out


def wait(predicate, timeout=30.0, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_storage(request, tmp_path):
    """storage.* of the sidecars: the ledger in SQLite, or in a PostgreSQL database of this test's own
    (the never-traced check then asks PostgreSQL which IDs the ledger has seen)."""
    data_dir = {"data_dir": str(tmp_path / "data")}
    if request.param == "sqlite":
        yield data_dir
        return
    with scratch_database("syncwatch_reconcile") as db:
        yield {**data_dir, **storage_config(db, tmp_path / "pg")}


def test_flash_sale_through_a_real_sidecar(tmp_path, dbs, erp_user, make_sidecar, capsys, ledger_storage):
    sale = FlashSale.make()
    asyncio.run(sale.load(dbs))
    base = {"storage": ledger_storage, "api": {"token": TOKEN}}

    # 1. The 20 traced orders reach the ledger: source spans for all, confirmations for those the ERP got.
    first = make_sidecar(base, name="tracing")
    integration = Integration(first)
    lost_traced = {oid for oid in sale.traced if oid in sale.missing}
    assert len(lost_traced) == 5
    for oid in sale.traced:
        t = sale.orders[oid]
        integration.source(str(oid), "orders", t)
        if oid not in sale.missing:
            integration.confirm(str(oid), "orders", "erp", t + 30, t + 30)
    integration.close()
    wait(lambda: api(first, "/api/v1/transactions?state=overdue&flow=orders")["count"] == 5, what="5 overdue")
    first.stop()

    # 2. The same ledger, now reconciling; four broken reconcilers beside the good one.
    down = reconciler_config(dbs, name="erp-down")
    down["databases"]["erp"]["url"] = f"mysql://root@127.0.0.1:{free_port()}/{dbs.my}"
    wrong = reconciler_config(dbs, name="erp-wrong-password")
    wrong["databases"]["erp"] = {"url": f"mysql://{erp_user}@127.0.0.1:3306/{dbs.my}", "password_env": "ERP_PASSWORD"}
    slow = reconciler_config(dbs, name="shop-slow", statement_timeout="200ms")
    slow["flows"]["orders"]["source"]["query"] = SOURCE_QUERY.replace("FROM orders", "FROM orders, pg_sleep(1)")
    not_id = reconciler_config(dbs, name="shop-not-an-id")
    not_id["flows"]["orders"]["source"]["query"] = SOURCE_QUERY.replace("order_id AS id", "total AS id")
    config = {**base, "reconcilers": [reconciler_config(dbs), down, wrong, slow, not_id]}
    sc = make_sidecar(config, env={"SHOP_DB_PASSWORD": "trust-auth", "ERP_PASSWORD": PASSWORD}, name="reconciling")
    sc.wait_for("syncwatch_reconciler_up", 1, timeout=30, reconciler="shop-erp")
    labels = {"reconciler": "shop-erp", "flow": "orders"}
    wait(lambda: sc.metric("syncwatch_reconcile_findings", kind="missing", **labels) == 140, what="140 missing")

    expected = {"missing": 140, "duplicated": 5, "late": 30, "never_traced": 3200 - 20}
    for kind, n in expected.items():
        assert sc.metric("syncwatch_reconcile_findings", kind=kind, **labels) == n, kind
        found = all_findings(sc, kind)
        assert len(found) == n, kind
    missing = all_findings(sc, "missing")
    assert set(missing) == {str(i) for i in sale.missing}
    assert set(all_findings(sc, "duplicated")) == {str(i) for i in sale.duplicated}
    assert set(all_findings(sc, "late")) == {str(i) for i in sale.late}
    never = all_findings(sc, "never_traced")
    assert not {str(i) for i in sale.traced} & set(never)
    # The cross-check: the ledger's overdue list is exactly the traced orders found missing.
    overdue = {i["correlation_id"] for i in api(sc, "/api/v1/transactions?state=overdue&flow=orders")["items"]}
    assert overdue == {str(i) for i in lost_traced}
    assert {k for k, v in missing.items() if v["ledger_state"] == "overdue"} == overdue
    assert sum(1 for v in missing.values() if v["ledger_state"] is None) == 135
    one = missing[str(min(sale.missing))]
    assert one["kind"] == "missing" and one["flow"] == "orders" and isinstance(one["id"], int)
    assert one["changed_at"].endswith("Z")

    # Every fault its own reason; the sidecar stays ready and the good reconciler up.
    for name, reason in (
        ("erp-down", "unreachable"),
        ("erp-wrong-password", "unauthorized"),
        ("shop-slow", "timeout"),
        ("shop-not-an-id", "bad_result"),
    ):
        assert sc.metric("syncwatch_reconciler_up", reconciler=name) == 0
        assert sc.metric("syncwatch_reconciler_errors_total", reconciler=name, reason=reason) >= 1, name
        others = [
            r for r in ("unreachable", "timeout", "unauthorized", "query_error", "bad_result", "other") if r != reason
        ]
        assert all(sc.metric("syncwatch_reconciler_errors_total", reconciler=name, reason=r) == 0 for r in others), name
    assert sc.get("/readyz")[0] == 200
    assert sc.metric("syncwatch_reconciler_up", reconciler="shop-erp") == 1
    log = sc.log()
    assert "reconciler erp-wrong-password: down: unauthorized:" in log
    assert PASSWORD not in log and "right-Secret-14" not in log
    assert "buyer" not in log  # no customer data from the rows

    # The API is behind the token.
    assert sc.get("/api/v1/reconciliation?kind=missing")[0] == 401
    assert sc.get("/api/v1/reconciliation?kind=nope", headers=AUTH)[0] == 400

    # The CLI lists them with their IDs.
    capsys.readouterr()
    rc = cli_main(["reconcile", "list", "--kind", "duplicated", "--url", sc.url, "--token", TOKEN])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "KIND", "FLOW", "RECONCILER", "SOURCE", "ID", "CHANGED", "AT", "DETAIL", "LEDGER"]
    assert len(lines) == 2 + 5
    assert {line.split()[4] for line in lines[2:]} == {str(i) for i in sale.duplicated}

    # 3. A restart keeps the findings (listed before the first run of the new process).
    sc.stop()
    again = make_sidecar(
        {**base, "reconcilers": [{**reconciler_config(dbs), "interval": "1h"}]},
        env={"SHOP_DB_PASSWORD": "x"},
        name="again",
    )
    assert len(all_findings(again, "missing")) == 140


def test_reconcile_test_command(tmp_path, dbs, capsys, monkeypatch):
    sale = FlashSale.make()
    asyncio.run(sale.load(dbs))
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump({"storage": {"data_dir": str(tmp_path / "d")}, "reconcilers": [reconciler_config(dbs)]})
    )
    monkeypatch.setenv("SHOP_DB_PASSWORD", "x")
    assert cli_main(["reconcile", "test", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    # (the YAML dump sorts the databases)
    assert f"shop-erp (sql: erp=mysql 127.0.0.1:3306/{dbs.my}, shop=postgresql 127.0.0.1:5432/{dbs.pg}): up" in out
    assert "3200 source rows, 3065 destination rows, 0 pending" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("    ")}
    assert lines["missing"][1] == "140" and lines["duplicated"][1] == "5" and lines["late"][1] == "30"
    assert len(lines["missing"][2:7]) == 5
    assert {x.rstrip(",") for x in lines["missing"][2:7]} <= {str(i) for i in sale.missing}
    assert "1 of 1 reconcilers up" in out
    # A dry run: nothing stored where the sidecar keeps its findings.
    assert not (tmp_path / "d" / "reconcile.db").exists()
