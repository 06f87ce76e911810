"""The sql reconciler against the real PostgreSQL and MariaDB on this machine: the flash sale of
issue 14 with exact counts, the window and its overlap, findings that survive a restart and resolve,
and each fault as its own counted reason."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from reconcile_support import DEST_QUERY, HOUR, SOURCE_QUERY, Databases, FlashSale, my_admin, reconciler_config, unique
from sidecar import free_port

from syncwatch.config.errors import ConfigError
from syncwatch.config.models import default_flows
from syncwatch.ledger.queries import LedgerQueries
from syncwatch.reconcile.manager import ReconcileManager
from syncwatch.reconcile.store import list_findings, store_path
from syncwatch.settings import load_config

ENV = {"SHOP_DB_PASSWORD": "not-used-trust-auth"}


@pytest.fixture
def sale(dbs):
    s = FlashSale.make()
    asyncio.run(s.load(dbs))
    return s


class Clock:
    def __init__(self, t: float | None = None):
        self.t = time.time() if t is None else t

    def __call__(self) -> float:
        return self.t


def manager(tmp_path: Path, *configs: dict, clock=time.time, registry=None) -> ReconcileManager:
    ledger = LedgerQueries(tmp_path / "ledger.db", clock)
    return ReconcileManager(
        list(configs), default_flows(), tmp_path, ledger, registry or CollectorRegistry(), clock=clock
    )


def run(m: ReconcileManager) -> dict[str, bool]:
    return asyncio.run(m.run_once())


def findings(tmp_path: Path, kind: str, state: str = "open") -> dict[str, dict]:
    items, cursor, out = None, None, {}
    while True:
        items, cursor = list_findings(store_path(tmp_path), kind=kind, state=state, limit=1000, cursor=cursor)
        out.update({i["source_id"]: i for i in items})
        if not cursor:
            return out


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


def test_flash_sale_exact_counts(tmp_path, dbs, sale):
    registry = CollectorRegistry()
    m = manager(tmp_path, reconciler_config(dbs), registry=registry)
    assert run(m) == {"shop-erp": True}
    assert m.store.open_counts("shop-erp", "orders") == {
        "missing": 140,
        "duplicated": 5,
        "never_traced": 3200,  # no spans at all in this test's ledger
        "late": 30,
    }
    assert set(findings(tmp_path, "missing")) == {str(i) for i in sale.missing}
    dup = findings(tmp_path, "duplicated")
    assert set(dup) == {str(i) for i in sale.duplicated}
    assert all(len(d["record_ids"]) == 2 for d in dup.values())
    late = findings(tmp_path, "late")
    assert set(late) == {str(i) for i in sale.late}
    assert {d["lag_seconds"] for d in late.values()} == {2 * HOUR}
    g = registry.get_sample_value
    labels = {"reconciler": "shop-erp", "flow": "orders"}
    assert g("syncwatch_reconcile_findings", {**labels, "kind": "missing"}) == 140
    assert g("syncwatch_reconcile_findings", {**labels, "kind": "duplicated"}) == 5
    assert g("syncwatch_reconcile_found_total", {**labels, "kind": "late"}) == 30
    assert g("syncwatch_reconciler_rows_read_total", {**labels, "side": "source"}) == 3200
    assert g("syncwatch_reconciler_rows_read_total", {**labels, "side": "destination"}) == 3200 - 140 + 5
    assert g("syncwatch_reconciler_up", {"reconciler": "shop-erp"}) == 1
    # The first run looked back over the whole sale: that is not "new" source traffic.
    assert g("syncwatch_reconcile_source_ids_total", labels) == 0


@pytest.mark.parametrize("source", ["postgresql", "mariadb"])
def test_small_pages_give_the_same_answer(tmp_path, dbs, sale, source):
    """Keyset pagination: 320 pages of 10 IDs find exactly what one big page finds, on either
    kind of database (the source here in MariaDB too, next to the ERP's table)."""
    cfg = reconciler_config(dbs, batch_size=10)
    if source == "mariadb":
        from datetime import UTC, datetime

        asyncio.run(dbs.my_exec("CREATE TABLE orders(order_id bigint PRIMARY KEY, updated_at datetime(6) NOT NULL)"))
        asyncio.run(
            dbs.my_exec(
                "INSERT INTO orders VALUES (%s, %s)",
                [(oid, datetime.fromtimestamp(t, UTC).replace(tzinfo=None)) for oid, t in sale.orders.items()],
            )
        )
        cfg["flows"]["orders"]["source"]["database"] = "erp"
    registry = CollectorRegistry()
    m = manager(tmp_path, cfg, registry=registry)
    assert run(m) == {"shop-erp": True}, m.runners[0].last_error
    assert m.store.open_counts("shop-erp", "orders") == {
        "missing": 140,
        "duplicated": 5,
        "never_traced": 3200,
        "late": 30,
    }
    assert set(findings(tmp_path, "missing")) == {str(i) for i in sale.missing}
    assert (
        registry.get_sample_value(
            "syncwatch_reconciler_rows_read_total", {"reconciler": "shop-erp", "flow": "orders", "side": "source"}
        )
        == 3200
    )


def test_window_moves_forward_and_overlaps_by_the_deadline(tmp_path, dbs, sale):
    clock = Clock()
    registry = CollectorRegistry()
    m = manager(tmp_path, reconciler_config(dbs), clock=clock, registry=registry)
    run(m)
    first_end = m.store.window_end("shop-erp", "orders")
    assert first_end == clock.t
    # An order placed 10 s ago, not yet in the ERP: pending, not missing (deadline 300 s).
    fresh = 900_001
    from datetime import UTC, datetime

    asyncio.run(
        dbs.pg_exec(
            "INSERT INTO orders VALUES ($1, 'x@example.com', 1, $2, $2)",
            [(fresh, datetime.fromtimestamp(clock.t - 10, UTC))],
        )
    )
    clock.t += 60
    run(m)
    r = m.runners[0].last_results["orders"]
    assert r.window == (first_end - 300, clock.t)
    assert r.source_rows == 1 and r.pending == 1
    assert str(fresh) not in findings(tmp_path, "missing")
    labels = {"reconciler": "shop-erp", "flow": "orders"}
    assert registry.get_sample_value("syncwatch_reconcile_pending", labels) == 1
    assert registry.get_sample_value("syncwatch_reconcile_source_ids_total", labels) == 0  # older than first_end
    # Six minutes on it is still absent: the overlap brings it back and it is judged missing now.
    clock.t += 360
    run(m)
    assert str(fresh) in findings(tmp_path, "missing")
    assert m.store.open_counts("shop-erp", "orders")["missing"] == 141


def test_restart_keeps_findings_and_a_late_arrival_resolves_missing(tmp_path, dbs, sale):
    clock = Clock()
    m = manager(tmp_path, reconciler_config(dbs), clock=clock)
    run(m)
    asyncio.run(m.stop())
    # A new process: the findings are there before its first run.
    m2 = manager(tmp_path, reconciler_config(dbs), clock=clock)
    assert len(findings(tmp_path, "missing")) == 140
    assert m2.store.window_end("shop-erp", "orders") == clock.t
    # One lost order is finally keyed in at the ERP, long after the window moved past it.
    arrived = sorted(sale.missing)[0]
    asyncio.run(
        dbs.my_exec(
            "INSERT INTO sales_orders(external_order_id, created_at) VALUES (%s, UTC_TIMESTAMP(3))", [(str(arrived),)]
        )
    )
    clock.t += 60
    run(m2)
    assert m2.store.open_counts("shop-erp", "orders")["missing"] == 139
    resolved = findings(tmp_path, "missing", state="resolved")
    assert set(resolved) == {str(arrived)}
    assert resolved[str(arrived)]["resolved_at"] == clock.t
    assert str(arrived) in findings(tmp_path, "late")


# ---- faults: each a clear error and a counted reason --------------------------------------------------


def _fault(tmp_path, config, reason, *, caplog=None, secret=None):
    registry = CollectorRegistry()
    m = manager(tmp_path, config, registry=registry)
    assert run(m) == {config["name"]: False}
    err = m.runners[0].last_error
    assert err is not None and err.reason == reason
    for r in ("unreachable", "timeout", "unauthorized", "query_error", "bad_result", "other"):
        want = 1 if r == reason else 0
        assert (
            registry.get_sample_value("syncwatch_reconciler_errors_total", {"reconciler": config["name"], "reason": r})
            == want
        )
    assert registry.get_sample_value("syncwatch_reconciler_up", {"reconciler": config["name"]}) == 0
    # A failed run neither moves the window nor stores anything.
    assert m.store.window_end(config["name"], "orders") is None
    if secret is not None:
        assert secret not in str(err)
        assert caplog is not None and secret not in caplog.text
    return err


def test_database_down_is_unreachable(tmp_path, dbs, sale):
    cfg = reconciler_config(dbs)
    cfg["databases"]["erp"]["url"] = f"mysql://root@127.0.0.1:{free_port()}/{dbs.my}"
    err = _fault(tmp_path, cfg, "unreachable")
    assert "database erp (127.0.0.1:" in err.message


def test_wrong_password_is_unauthorized_and_never_shown(tmp_path, dbs, sale, caplog, monkeypatch):
    user = unique("sw_ro")[:30]
    asyncio.run(my_admin(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-Secret-1'"))
    try:
        asyncio.run(my_admin(f"GRANT SELECT ON {dbs.my}.* TO '{user}'@'%'"))
        monkeypatch.setenv("ERP_DB_PASSWORD", "wrong-Secret-2")
        cfg = reconciler_config(dbs)
        cfg["databases"]["erp"] = {"url": f"mysql://{user}@127.0.0.1:3306/{dbs.my}", "password_env": "ERP_DB_PASSWORD"}
        caplog.set_level(logging.DEBUG)
        err = _fault(tmp_path, cfg, "unauthorized", caplog=caplog, secret="wrong-Secret-2")
        assert "access denied (1045)" in err.message
        # The right one, from a file (a mounted Secret), works.
        secret_file = tmp_path / "erp-password"
        secret_file.write_text("right-Secret-1\n")
        cfg["databases"]["erp"] = {"url": f"mysql://{user}@127.0.0.1:3306/{dbs.my}", "password_file": str(secret_file)}
        m = manager(tmp_path / "ok", cfg)
        assert run(m) == {"shop-erp": True}
        assert m.store.open_counts("shop-erp", "orders")["missing"] == 140
    finally:
        asyncio.run(my_admin(f"DROP USER IF EXISTS '{user}'@'%'"))


def test_unknown_postgres_role_is_unauthorized(tmp_path, dbs, sale):
    cfg = reconciler_config(dbs)
    cfg["databases"]["shop"]["url"] = f"postgresql://no_such_role_{unique('r')}@127.0.0.1:5432/{dbs.pg}"
    _fault(tmp_path, cfg, "unauthorized")


def test_query_timeout(tmp_path, dbs, sale):
    cfg = reconciler_config(dbs, statement_timeout="300ms")
    cfg["flows"]["orders"]["source"]["query"] = SOURCE_QUERY.replace("FROM orders", "FROM orders, pg_sleep(2)")
    started = time.monotonic()
    err = _fault(tmp_path, cfg, "timeout")
    assert time.monotonic() - started < 1.8
    assert "statement_timeout 0.3s" in err.message


def test_a_column_that_is_not_an_id(tmp_path, dbs, sale):
    cfg = reconciler_config(dbs)
    cfg["flows"]["orders"]["source"]["query"] = SOURCE_QUERY.replace("order_id AS id", "total AS id")
    err = _fault(tmp_path, cfg, "bad_result")
    assert err.message == "source query: column id returned Decimal, not an ID (an integer, text or UUID)"
    cfg["flows"]["orders"]["source"]["query"] = SOURCE_QUERY.replace("updated_at AS changed_at", "email AS changed_at")
    err = _fault(tmp_path / "b", cfg, "bad_result")
    assert err.message == "source query: column changed_at returned str, not a timestamp"


def test_a_query_error_and_read_only(tmp_path, dbs, sale):
    cfg = reconciler_config(dbs)
    cfg["flows"]["orders"]["destination"]["query"] = DEST_QUERY.replace("record_id,", "no_such_column AS record_id,")
    err = _fault(tmp_path, cfg, "query_error")
    assert "no_such_column" in err.message
    # The transaction is read-only: a query with a side effect is refused by the database itself.
    cfg = reconciler_config(dbs)
    cfg["flows"]["orders"]["source"]["query"] = (
        "SELECT order_id AS id, updated_at AS changed_at FROM orders, "
        "LATERAL (SELECT nextval('sw_probe')) AS s WHERE updated_at >= :window_start AND updated_at < :window_end"
    )
    asyncio.run(dbs.pg_exec("CREATE SEQUENCE sw_probe"))
    err = _fault(tmp_path / "ro", cfg, "query_error")
    assert "25006" in err.message  # read_only_sql_transaction


def test_one_database_down_marks_only_that_reconciler_down(tmp_path, dbs, sale):
    bad = reconciler_config(dbs, name="other-erp")
    bad["databases"]["erp"]["url"] = f"mysql://root@127.0.0.1:{free_port()}/{dbs.my}"
    m = manager(tmp_path, reconciler_config(dbs), bad)
    assert run(m) == {"shop-erp": True, "other-erp": False}


# ---- bad config fails at start, naming the key --------------------------------------------------------


def _load(tmp_path, entry, env=None):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"reconcilers": [entry]}))
    return load_config(path, environ={**ENV, **(env or {})})


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (
            lambda c: c["databases"]["shop"].update(url="postgresql://u:hunter2@db/shop"),
            "reconcilers[0].databases.shop.url",
            "a password in the URL: use password_env or password_file (the value is not shown)",
        ),
        (
            lambda c: c["databases"]["shop"].update(password_env="NOT_SET_ANYWHERE"),
            "reconcilers[0].databases.shop.password_env",
            "environment variable NOT_SET_ANYWHERE is not set or empty",
        ),
        (
            lambda c: c["flows"]["orders"]["source"].update(
                query="SELECT order_id AS id, updated_at AS changed_at FROM orders"
            ),
            "reconcilers[0].flows.orders.source",
            "query: the source query must select by :window_start and :window_end",
        ),
        (
            lambda c: c["flows"]["orders"]["source"].update(
                query="DELETE FROM orders WHERE :window_start < :window_end"
            ),
            "reconcilers[0].flows.orders.source.query",
            "expected one SELECT (or WITH ... SELECT) statement (got 'DELETE FROM orders WHERE :window_start < :window_end')",
        ),
        (lambda c: c.update(flows={"refunds": c["flows"]["orders"]}), "reconcilers[0].flows.refunds", None),
        (lambda c: c.update(batchsize=10), "reconcilers[0].batchsize", None),
        (lambda c: c["flows"]["orders"]["source"].update(database="crm"), "reconcilers[0].flows", None),
    ],
)
def test_bad_config_names_the_key(tmp_path, change, key, message):
    cfg = reconciler_config(Databases())
    change(cfg)
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, cfg)
    assert exc.value.key == key
    if message is not None:
        assert exc.value.message == message
    assert "hunter2" not in str(exc.value)


# ---- the quiet-flow inputs -----------------------------------------------------------------------------


def test_source_rate_counts_each_new_record_once(tmp_path, dbs, sale):
    """syncwatch_reconcile_source_ids_total: records changed since the previous window ended; the
    overlap re-reads them, but counts them only once."""
    from datetime import UTC, datetime

    clock = Clock()
    registry = CollectorRegistry()
    m = manager(tmp_path, reconciler_config(dbs), clock=clock, registry=registry)
    run(m)
    t0 = clock.t
    rows = [(900_100 + i, datetime.fromtimestamp(t0 + 5 + i, UTC)) for i in range(3)]
    asyncio.run(dbs.pg_exec("INSERT INTO orders VALUES ($1, 'x@example.com', 1, $2, $2)", rows))
    labels = {"reconciler": "shop-erp", "flow": "orders"}
    clock.t = t0 + 60
    run(m)
    assert registry.get_sample_value("syncwatch_reconcile_source_ids_total", labels) == 3
    clock.t = t0 + 120  # the next window starts 300 s back and re-reads them: not new again
    run(m)
    assert m.runners[0].last_results["orders"].source_rows == 3
    assert registry.get_sample_value("syncwatch_reconcile_source_ids_total", labels) == 3


def test_expected_rate_within_business_hours(tmp_path, dbs):
    registry = CollectorRegistry()
    monday_noon_berlin = datetime_utc(2026, 11, 30, 11, 0)  # 12:00 in Berlin
    clock = Clock(monday_noon_berlin)
    expected = [
        {
            "flow": "orders",
            "min_per_hour": 20,
            "days": "weekdays",
            "start": "08:00",
            "end": "20:00",
            "timezone": "Europe/Berlin",
        }
    ]
    m = manager(tmp_path, reconciler_config(dbs, expected=expected), clock=clock, registry=registry)
    labels = {"reconciler": "shop-erp", "flow": "orders"}
    assert registry.get_sample_value("syncwatch_reconcile_expected_source_ids_per_hour", labels) == 20
    clock.t = datetime_utc(2026, 11, 30, 19, 30)  # 20:30 in Berlin: outside
    m.runners[0].update_expected()
    assert registry.get_sample_value("syncwatch_reconcile_expected_source_ids_per_hour", labels) == 0
    clock.t = datetime_utc(2026, 12, 5, 11, 0)  # Saturday
    m.runners[0].update_expected()
    assert registry.get_sample_value("syncwatch_reconcile_expected_source_ids_per_hour", labels) == 0
    bad = reconciler_config(dbs, expected=[{**expected[0], "flow": "refunds"}])
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, bad)
    assert exc.value.key == "reconcilers[0].expected[0].flow"


def datetime_utc(*parts: int) -> float:
    from datetime import UTC, datetime

    return datetime(*parts, tzinfo=UTC).timestamp()


# ---- SQLite files (the simulated ERP's kind of database) ------------------------------------------------


def _sqlite_sale(tmp_path: Path, sale: FlashSale) -> tuple[Path, Path]:
    import sqlite3
    from datetime import UTC

    shop, erp = tmp_path / "shop.db", tmp_path / "erp.db"
    with sqlite3.connect(shop) as db:
        db.execute("CREATE TABLE orders(order_id INTEGER PRIMARY KEY, updated_at REAL NOT NULL)")
        db.executemany("INSERT INTO orders VALUES (?, ?)", sorted(sale.orders.items()))
    with sqlite3.connect(erp) as db:
        # Times as ISO text here, as many SQLite schemas keep them.
        db.execute("CREATE TABLE sales_orders(record_id INTEGER PRIMARY KEY, external_order_id TEXT, created_at TEXT)")
        db.execute("CREATE INDEX by_ext ON sales_orders(external_order_id)")
        db.executemany(
            "INSERT INTO sales_orders(external_order_id, created_at) VALUES (?, ?)",
            [(oid, arrived.replace(tzinfo=UTC).isoformat()) for oid, arrived in sale.erp_rows()],
        )
    return shop, erp


def _sqlite_config(shop: Path, erp: Path, **extra) -> dict:
    return {
        "type": "sql",
        "name": "files",
        "lookback": "50h",
        "batch_size": 500,
        "databases": {"shop": {"url": f"sqlite:///{shop}"}, "erp": {"url": f"sqlite:///{erp}"}},
        "flows": {
            "orders": {
                "source": {"database": "shop", "query": SOURCE_QUERY},
                "destination": {"database": "erp", "query": DEST_QUERY},
            }
        },
        **extra,
    }


def test_sqlite_files_exact_counts_and_read_only(tmp_path):
    sale = FlashSale.make()
    shop, erp = _sqlite_sale(tmp_path, sale)
    m = manager(tmp_path / "data", _sqlite_config(shop, erp))
    assert run(m) == {"files": True}, m.runners[0].last_error
    assert m.store.open_counts("files", "orders") == {"missing": 140, "duplicated": 5, "never_traced": 3200, "late": 30}
    assert set(findings(tmp_path / "data", "missing")) == {str(i) for i in sale.missing}
    # A query that writes is refused by the read-only connection.
    cfg = _sqlite_config(shop, erp)
    cfg["flows"]["orders"]["source"]["query"] = (
        "WITH x AS (SELECT 1) SELECT order_id AS id, updated_at AS changed_at FROM orders "
        "WHERE updated_at >= :window_start AND updated_at < :window_end AND (SELECT load_extension('x')) IS NULL"
    )
    err = _fault(tmp_path / "w", cfg, "query_error")
    assert "database shop (" in err.message
    # A missing file is unreachable; a runaway query hits the statement timeout.
    _fault(tmp_path / "gone", _sqlite_config(tmp_path / "nope.db", erp), "unreachable")
    slow = _sqlite_config(shop, erp, statement_timeout="200ms")
    slow["flows"]["orders"]["source"]["query"] = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        "SELECT o.order_id AS id, o.updated_at AS changed_at FROM orders o, n "
        "WHERE o.updated_at >= :window_start AND o.updated_at < :window_end"
    )
    started = time.monotonic()
    err = _fault(tmp_path / "slow", slow, "timeout")
    assert time.monotonic() - started < 5
