"""The ledger's readers on both backends (ledger/reader.py): the query API gives the same answers —
JSON, order, cursors, page by page — for the same rows on SQLite and on PostgreSQL, whether they were
written by hand or by the ledger writer. On PostgreSQL every read is a read-only transaction bounded
by storage.postgresql.statement_timeout; a database that is gone, refused or too slow is answered
503 + Retry-After (API) or a 503 page (web view), the reconcilers count the run as unreachable, and
the same process answers again once the database is back."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from typing import Any

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from api_data import AUTH, NOW, TOKEN, ledger_rows, make_config, write_ledger
from collectors_fakes.tcp_proxy import TcpProxy
from ledger_events import reset_ids, run
from otel_helpers import now
from otlp_raw import post, stage_request
from pg_support import PG_HOST, PG_PORT, dsn, reset, scratch_database, storage_config
from prometheus_client import CollectorRegistry
from reconcile_support import FlashSale, reconciler_config
from sidecar import free_port, transactions_cli
from snapshot_data import T0

from syncwatch.api.routes import setup_api
from syncwatch.cli.main import main as cli_main
from syncwatch.collectors.deadletters import DeadLetter, DeadLetterRead
from syncwatch.config.models import Config, default_flows
from syncwatch.dead_letters import book_for_config
from syncwatch.ledger.postgres_reader import PostgresQueries, _list_query
from syncwatch.ledger.postgres_store import PostgresStore
from syncwatch.ledger.read_model import SORT_COLUMN, STATES
from syncwatch.ledger.reader import LedgerUnavailable, open_queries
from syncwatch.ledger.schema import corr_hash
from syncwatch.ledger.transitions import Ledger
from syncwatch.metrics.registry import Metrics
from syncwatch.reconcile.manager import ReconcileManager
from syncwatch.ui import setup_ui

pytestmark = pytest.mark.databases

# A database whose default collation orders text unlike SQLite (ICU en-US: a < A < b < B): the
# readers' order must not follow it.
ICU = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
# Correlation IDs that sort differently by code point and by a language's rules; one deadline for all.
TIES = ["b", "B", "a", "A", "a-1", "a_1", "a1", "é", "z", "Ω", "Z-9"]
SECRET = "hunter2-reads"


@pytest.fixture(scope="module")
def pg_db():
    with scratch_database("syncwatch_reads", ICU) as name:
        yield name


def pg_storage(db: str, workdir, port: int = PG_PORT, **postgresql: Any) -> dict:
    """storage.* on `db`, the DSN with a password in it (trust auth ignores it): it must appear in no
    answer and no log line."""
    storage = storage_config(db, workdir, port)
    storage["postgresql"].update(postgresql)
    with open(storage["postgresql"]["dsn_file"], "w") as f:
        f.write(f"postgresql://postgres:{SECRET}@{PG_HOST}:{port}/{db}\n")
    return storage


def pg_config(db: str, tmp_path, port: int = PG_PORT, **postgresql: Any) -> Config:
    return make_config(tmp_path / "pg", storage=pg_storage(db, tmp_path / "pg", port, **postgresql))


def sqlite_config(tmp_path) -> Config:
    return make_config(tmp_path / "sqlite")


def tie_rows() -> list[tuple[str, dict]]:
    """Rows whose sort values are equal, so the order comes from the key columns alone."""
    rows: list[tuple[str, dict]] = []
    for i, corr in enumerate(TIES):
        for dest in ("erp", "ERP", "wms"):
            rows.append(
                (
                    "open_tx",
                    dict(
                        corr=corr,
                        dest=dest,
                        flow="ties",
                        source="shop",
                        changed_at=T0,
                        opened_at=T0,
                        deadline=T0 + 7,
                        attempts=i,
                    ),
                )
            )
            rows.append(
                (
                    "closed_tx",
                    dict(
                        corr=corr,
                        dest=dest,
                        flow="ties",
                        source="shop",
                        outcome="failed" if i % 2 else "expired",
                        changed_at=T0,
                        closed_at=T0 + 99,
                        attempts=1,
                        corr_hash=corr_hash(corr),
                    ),
                )
            )
            rows.append(
                (
                    "applies",
                    dict(
                        idem=f"k-{corr}", corr=corr, dest=dest, flow="ties", first_at=T0, last_at=T0 + 50, applies=2 + i
                    ),
                )
            )
    return rows


def serve(config: Config, scenario, clock: float = NOW):
    """Run `scenario(client)` against the API and the web view (logged in) of `config`."""

    async def go():
        app = web.Application()
        setup_api(app, config=config, snapshots=None, clock=lambda: clock)
        setup_ui(app, config=config, clock=lambda: clock)
        async with TestClient(TestServer(app)) as client:
            r = await client.post("/ui/login", data={"token": TOKEN, "next": "/ui/"}, allow_redirects=False)
            assert r.status == 303
            return await scenario(client)

    return asyncio.run(go())


async def walk(client, query: str, limit: int) -> list[tuple[int, Any]]:
    """Every page of one list, following next_cursor: [(status, body), ...]."""
    pages, cursor = [], None
    while True:
        path = f"/api/v1/transactions?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        r = await client.get(path, headers=AUTH)
        body = await r.json()
        pages.append((r.status, body))
        cursor = body.get("next_cursor") if r.status == 200 else None
        if not cursor or len(pages) > 500:
            return pages


def every_answer(config: Config, corrs: list[str], flows: list[str | None], limits: list[int], clock: float) -> dict:
    """Each list (state x flow x page size, every page) and each timeline, as the API answers them."""

    async def scenario(client):
        out: dict[str, Any] = {}
        for state in STATES:
            for flow in flows:
                for limit in limits:
                    query = f"state={state}" + (f"&flow={flow}" if flow else "")
                    out[f"{query} limit={limit}"] = await walk(client, query, limit)
        for corr in [*corrs, "nope"]:
            r = await client.get(f"/api/v1/transactions/{corr}", headers=AUTH)
            out[corr] = (r.status, await r.json())
        return out

    return serve(config, scenario, clock)


def test_the_same_rows_give_the_same_answers_pages_and_cursors_on_both_backends(tmp_path, pg_db):
    reset(pg_db)
    rows = ledger_rows() + tie_rows()
    answers = {}
    for name, config in (("sqlite", sqlite_config(tmp_path)), ("postgresql", pg_config(pg_db, tmp_path))):
        write_ledger(config, rows)
        corrs = sorted({r["corr"] for _, r in rows})
        answers[name] = every_answer(config, corrs, [None, "orders", "ties", "customers"], [1, 4, 1000], NOW)
    sqlite, pg = answers["sqlite"], answers["postgresql"]
    assert sqlite.keys() == pg.keys()
    for key in sqlite:
        assert pg[key] == sqlite[key], key
    # Not equal by being empty: the lists hold what was written, in code point order among ties.
    whole = [i for _, page in sqlite["state=pending&flow=ties limit=1000"] for i in page["items"]]
    expected = [(c, d) for c in sorted(TIES) for d in sorted(("erp", "ERP", "wms"))]
    assert [(i["correlation_id"], i["destination"]) for i in whole] == expected
    one_by_one = sqlite["state=pending&flow=ties limit=1"]
    assert len(one_by_one) == len(expected) and all(status == 200 for status, _ in one_by_one)
    assert [p["items"][0]["correlation_id"] for _, p in one_by_one] == [c for c, _ in expected]
    failed = [(i["correlation_id"], i["destination"]) for _, page in pg["state=failed limit=4"] for i in page["items"]]
    odd = sorted((c for i, c in enumerate(TIES) if i % 2), reverse=True)  # newest first: DESC throughout
    assert failed == [(c, d) for c in odd for d in ("wms", "erp", "ERP")] + [("ord-9", "erp")]
    dups = [i for _, page in pg["state=duplicate limit=1"] for i in page["items"]]
    assert len(dups) == 1 + 3 * len(TIES) and dups[-1]["correlation_id"] == "inv-7" and dups[-1]["source"] == "wms"
    assert all(d["source"] == "shop" for d in dups[:-1])
    assert [len(p["items"]) for _, p in pg["state=overdue&flow=orders limit=4"]] == [4, 4, 4, 4, 4, 4, 1]
    assert pg["ord-1"][0] == 200 and pg["ord-1"][1]["destinations"][0]["lag_seconds"] == 42.0
    assert pg["nope"][0] == 404
    # The reconcilers' cross-check reads the same states.
    ids = ["late-00", "fresh-1", "ord-9", "ord-1", "a", "never-seen"]
    states = [
        open_queries(c, lambda: NOW).states_of("orders", ids)
        for c in (sqlite_config(tmp_path), pg_config(pg_db, tmp_path))
    ]
    assert (
        states[0] == states[1] == {"late-00": "overdue", "fresh-1": "pending", "ord-9": "failed", "ord-1": "confirmed"}
    )


def test_timelines_read_together_are_the_timelines_read_one_by_one_on_both_backends(tmp_path, pg_db):
    reset(pg_db)
    rows = ledger_rows() + tie_rows()
    corrs = sorted({r["corr"] for _, r in rows})
    answers = []
    for config in (sqlite_config(tmp_path), pg_config(pg_db, tmp_path)):
        write_ledger(config, rows)
        reader = open_queries(config, lambda: NOW)
        asked = [*corrs, "nope", "ord\x001", corrs[0]]  # unknown, not storable, repeated
        together = reader.timelines(asked)
        assert together == {c: reader.timeline(c) for c in corrs}
        assert reader.timelines([]) == {}
        answers.append(together)
    assert answers[0] == answers[1]
    assert len(answers[0]) == len(corrs) > 20


def test_what_the_ledger_writer_records_reads_the_same_on_both_backends(tmp_path, pg_db):
    reset(pg_db)
    answers = {}
    for name, storage in (("sqlite", {}), ("postgresql", pg_storage(pg_db, tmp_path / "pg"))):
        config = Config.model_validate(
            {
                "storage": {"data_dir": str(tmp_path / name), **storage},
                "flows": {"orders": {"deadline": "60s"}},
                "api": {"token": TOKEN},
            }
        )
        reset_ids()  # the same span IDs on both backends
        clock = [T0]
        ledger = Ledger(config, Metrics(CollectorRegistry()), clock=lambda: clock[0])
        run(ledger, clock)
        ledger.close()
        corrs = ["o-0", "o-1", "o-2", "o-3", "o-4", "o-5", "early"]
        answers[name] = every_answer(config, corrs, [None, "orders"], [1, 1000], clock[0])
    sqlite, pg = answers["sqlite"], answers["postgresql"]
    for key in sqlite:
        assert pg[key] == sqlite[key], key
    overdue = [i["correlation_id"] for _, p in pg["state=overdue limit=1000"] for i in p["items"]]
    assert overdue == ["o-4", "o-5"]
    (o3,) = pg["o-3"][1]["destinations"]
    assert o3["state"] == "confirmed" and o3["duplicate"] and o3["source_span"]["span_id"]
    assert [i["correlation_id"] for _, p in pg["state=duplicate limit=1"] for i in p["items"]] == ["o-3"]


def test_text_postgresql_cannot_hold_is_refused_or_unknown_alike_on_both_backends(tmp_path, pg_db):
    """A NUL or a lone surrogate in a forged cursor is a 400 on both (PostgreSQL's text holds neither);
    a correlation ID or flow with a NUL is simply unknown, not a database error."""
    reset(pg_db)

    def cursor(raw: str) -> str:
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    async def scenario(client):
        out = []
        for raw in ('[1.5, "a\\u0000b", "erp", "orders"]', '[1.5, "\\ud800", "erp", "orders"]'):
            for state in ("pending", "failed", "duplicate"):
                r = await client.get(f"/api/v1/transactions?state={state}&cursor={cursor(raw)}", headers=AUTH)
                out.append((r.status, (await r.json())["error"]))
        r = await client.get("/api/v1/transactions/ord%001", headers=AUTH)
        out.append((r.status, None))
        r = await client.get("/api/v1/transactions?state=pending&flow=ord%00ers", headers=AUTH)
        out.append((r.status, (await r.json())["count"]))
        return out

    answers = []
    for config in (sqlite_config(tmp_path), pg_config(pg_db, tmp_path)):
        write_ledger(config)
        answers.append(serve(config, scenario))
        assert open_queries(config).states_of("orders", ["ord-1", "ord\x001"]) == {"ord-1": "confirmed"}
    assert answers[0] == answers[1]
    assert answers[0] == [(400, "cursor is not one this API returned")] * 6 + [(404, None), (200, 0)]


def test_a_lost_database_is_a_503_and_reads_recover_without_a_restart(tmp_path, caplog):
    async def scenario(client, db):
        out = {"before": (await client.get("/api/v1/transactions?state=pending", headers=AUTH)).status}
        with psycopg.connect(dsn("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
        for path in ("/api/v1/transactions?state=pending", "/api/v1/transactions/ord-1"):
            r = await client.get(path, headers=AUTH)
            out[path] = (r.status, r.headers.get("Retry-After"), (await r.json())["error"])
        for path in ("/ui/transactions?state=overdue", "/ui/transactions/ord-1"):
            r = await client.get(path)
            out[path] = (r.status, await r.text())
        with psycopg.connect(dsn("postgres"), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{db}"')
        write_ledger(config)
        r = await client.get("/api/v1/transactions?state=overdue&flow=orders&limit=1000", headers=AUTH)
        out["after"] = (r.status, (await r.json())["count"])
        return out

    with scratch_database("syncwatch_lost") as db, caplog.at_level(logging.WARNING):
        config = pg_config(db, tmp_path)
        write_ledger(config)
        out = serve(config, lambda client: scenario(client, db))
    assert out["before"] == 200
    for path in ("/api/v1/transactions?state=pending", "/api/v1/transactions/ord-1"):
        status, retry_after, error = out[path]
        assert (status, retry_after) == (503, "5"), path
        assert error.startswith("the ledger cannot be read: PostgreSQL: ") and f'"{db}" does not exist' in error
        assert error.endswith("; retry later")
    for path in ("/ui/transactions?state=overdue", "/ui/transactions/ord-1"):
        status, html = out[path]
        assert status == 503 and "the ledger cannot be read: PostgreSQL" in html and "try again" in html, path
    assert out["after"] == (200, 25)  # the same process reads again
    assert "query API: the ledger cannot be read" in caplog.text and "web view: the ledger cannot" in caplog.text
    assert SECRET not in caplog.text and SECRET not in str(out)


def test_a_refused_connection_is_a_503_and_so_is_a_statement_over_the_timeout(tmp_path, pg_db):
    reset(pg_db)
    closed = pg_config("nowhere", tmp_path / "closed", port=free_port())

    async def refused(client):
        r = await client.get("/api/v1/transactions?state=failed", headers=AUTH)
        return r.status, r.headers.get("Retry-After"), (await r.json())["error"]

    status, retry_after, error = serve(closed, refused)
    assert (status, retry_after) == (503, "5") and "Connection refused" in error and SECRET not in error

    slow = pg_config(pg_db, tmp_path / "slow", statement_timeout="300ms")
    write_ledger(slow)

    async def locked(client):
        with psycopg.connect(dsn(pg_db)) as holder:
            holder.execute("LOCK TABLE open_tx IN ACCESS EXCLUSIVE MODE")  # held until the block ends
            started = time.monotonic()
            r = await client.get("/api/v1/transactions?state=overdue", headers=AUTH)
            took = time.monotonic() - started
            during = (r.status, (await r.json())["error"], took)
        r = await client.get("/api/v1/transactions?state=overdue", headers=AUTH)
        return during, r.status

    (status, error, took), after = serve(slow, locked)
    assert status == 503 and "no answer within storage.postgresql.statement_timeout" in error
    assert 0.25 < took < 3.0
    assert after == 200


def test_reads_are_read_only_transactions_bounded_by_the_statement_timeout(tmp_path, pg_db):
    reset(pg_db)
    config = pg_config(pg_db, tmp_path, statement_timeout="1500ms")
    write_ledger(config)
    reader = PostgresQueries(config)
    with reader._transaction() as conn:
        assert conn is not None
        settings = [
            conn.execute(f"SHOW {name}").fetchone()[name]
            for name in ("transaction_read_only", "transaction_isolation", "statement_timeout")
        ]
        assert settings == ["on", "repeatable read", "1500ms"]
    with pytest.raises(LedgerUnavailable, match="cannot execute DELETE in a read-only transaction"):
        with reader._transaction() as conn:
            assert conn is not None
            conn.execute("DELETE FROM open_tx")
    with psycopg.connect(dsn(pg_db)) as check:
        assert check.execute("SELECT count(*) FROM open_tx").fetchone() == (29,)


def test_before_the_schema_exists_the_ledger_reads_as_empty(tmp_path):
    with scratch_database("syncwatch_empty") as db:
        reader = open_queries(pg_config(db, tmp_path))
        assert reader.timeline("ord-1") is None
        assert reader.reconciliation("overdue") == ([], None)
        assert reader.states_of("orders", ["ord-1"]) == {}


def test_a_reconciler_whose_ledger_is_unreachable_fails_its_run_as_unreachable(tmp_path, dbs, monkeypatch):
    """The never-traced check asks the ledger which IDs it saw: without an answer the run fails,
    counted, instead of reporting every source row as never traced."""
    sale = FlashSale.make()
    asyncio.run(sale.load(dbs))
    monkeypatch.setenv("SHOP_DB_PASSWORD", "not-used-trust-auth")
    registry = CollectorRegistry()
    ledger = open_queries(pg_config("nowhere", tmp_path, port=free_port()))
    manager = ReconcileManager([reconciler_config(dbs)], default_flows(), tmp_path, ledger, registry)
    try:
        assert asyncio.run(manager.run_once()) == {"shop-erp": False}
    finally:
        asyncio.run(manager.stop())
    (runner,) = manager.runners
    assert runner.last_error is not None and runner.last_error.reason == "unreachable"
    assert str(runner.last_error).startswith("unreachable: the ledger cannot be read: PostgreSQL: ")
    assert SECRET not in str(runner.last_error)
    errors = {
        r: registry.get_sample_value("syncwatch_reconciler_errors_total", {"reconciler": "shop-erp", "reason": r})
        for r in ("unreachable", "other")
    }
    assert errors == {"unreachable": 1.0, "other": 0.0}
    found = registry.get_sample_value(
        "syncwatch_reconcile_findings", {"reconciler": "shop-erp", "flow": "orders", "kind": "never_traced"}
    )
    assert found in (None, 0.0)


def test_dead_letters_link_to_transactions_in_the_postgresql_ledger(tmp_path, pg_db, monkeypatch):
    reset(pg_db)
    config = pg_config(pg_db, tmp_path)
    write_ledger(config)
    book = book_for_config(config)

    def letter(key: str, corr: str) -> DeadLetter:
        return DeadLetter(key, corr, "rejected", "orders", NOW - 90, 1, b"{}", 2, False)

    connections = []
    connect = psycopg.connect

    def counted(*args, **kwargs):
        connections.append(kwargs.get("application_name"))
        return connect(*args, **kwargs)

    monkeypatch.setattr(psycopg, "connect", counted)
    orders = [letter("m-1", "late-03"), letter("m-2", "SO-404"), letter("m-3", "ord-1"), letter("m-4", "late-03")]
    book.record(
        "rabbit",
        [
            DeadLetterRead("/", "orders.dlq", orders, True),
            DeadLetterRead("/", "invoices.dlq", [letter("m-5", "inv-7"), letter("m-6", "")], True),
        ],
    )
    assert connections == ["syncwatch-reader", "syncwatch-reader"]  # one ledger read per DLQ
    linked = {(row["queue"], row["key"]): row["linked"] for row in book.list()}
    assert linked == {
        ("orders.dlq", "m-1"): True,
        ("orders.dlq", "m-2"): False,
        ("orders.dlq", "m-3"): True,
        ("orders.dlq", "m-4"): True,
        ("invoices.dlq", "m-5"): True,
        ("invoices.dlq", "m-6"): False,
    }


def test_list_reads_are_index_scans_on_postgresql(tmp_path, pg_db):
    """Like the SQLite plans in test_ledger_plans.py: a page costs the rows it returns, not the ledger."""
    reset(pg_db)
    PostgresStore(pg_config(pg_db, tmp_path)).close()  # the schema, as syncwatch makes it
    with psycopg.connect(dsn(pg_db)) as conn:
        with conn.cursor().copy("COPY open_tx (corr, dest, flow, opened_at, deadline) FROM STDIN") as copy:
            for i in range(20_000):
                copy.write_row((f"ORD-{i:06d}", "erp", "orders", T0 + i, T0 + 300 + i))
        with conn.cursor().copy("COPY closed_tx (corr, dest, flow, outcome, closed_at, corr_hash) FROM STDIN") as copy:
            for i in range(20_000):
                outcome = "failed" if i % 100 == 0 else "confirmed"
                copy.write_row((f"ORD-{i:06d}", "erp", "orders", outcome, T0 + i, corr_hash(f"ORD-{i:06d}")))
        with conn.cursor().copy("COPY applies (idem, corr, dest, flow, first_at, last_at, applies) FROM STDIN") as copy:
            for i in range(20_000):
                copy.write_row((f"k-{i}", f"ORD-{i:06d}", "erp", "orders", T0 + i, T0 + i, 2 if i % 100 == 0 else 1))
        conn.execute("ANALYZE")
        after = [T0 + 10_300.0, "ORD-010000", "erp", "orders"]
        for state, index in (
            ("overdue", "open_tx_by_deadline"),
            ("pending", "open_tx_by_deadline"),
            ("failed", "closed_tx_problems"),
            ("duplicate", "applies_duplicates"),
        ):
            for flow, cursor in ((None, None), ("orders", after)):
                sql, params = _list_query(state, flow, 101, cursor, T0 + 40_000)
                plan = json.dumps(conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()[0])
                assert f'"Index Name": "{index}"' in plan and "Seq Scan" not in plan, (state, flow, plan)
                if cursor:  # a deep page starts at the cursor in the index, not at the first row
                    column = SORT_COLUMN[state]
                    assert re.search(f'"Index Cond": "[^"]*{column} [<>]= ', plan), (state, plan)


def test_check_config_names_where_the_ledger_is_never_the_dsn(tmp_path, capsys):
    config = pg_config("ledger", tmp_path)
    path = tmp_path / "c.yaml"
    dsn_file = config.storage.postgresql.dsn_file
    path.write_text(f"storage:\n  backend: postgresql\n  postgresql:\n    dsn_file: {dsn_file}\n")
    assert cli_main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"ledger: PostgreSQL (DSN in storage.postgresql.dsn_file {dsn_file})" in out
    assert SECRET not in out


# ---- a real sidecar on PostgreSQL ----------------------------------------------------------------

COMMON = {"syncwatch.flow": "orders", "syncwatch.source": "storefront", "syncwatch.destination": "erp"}


def test_a_sidecar_on_postgresql_lists_what_it_recorded_and_answers_503_while_the_database_is_cut_off(
    make_sidecar, pg_db, tmp_path
):
    reset(pg_db)
    proxy = TcpProxy(PG_HOST, PG_PORT).start()
    try:
        storage = pg_storage(pg_db, tmp_path / "sc", proxy.port)
        sc = make_sidecar({"storage": storage, "api": {"token": TOKEN}, "flows": {"orders": {"deadline": "30s"}}})
        t0 = now() - 120
        spans = [
            {"_start": t0, "syncwatch.stage": "source", **COMMON, "correlation_id": f"SO-{i}"} for i in range(5)
        ] + [{"_start": t0 + 5, "_end": t0 + 6, "syncwatch.stage": "confirm", **COMMON, "correlation_id": "SO-0"}]
        assert post(sc.otlp_http + "/v1/traces", stage_request(spans).SerializeToString())[0] == 200

        def overdue() -> tuple[int, Any]:
            status, body = sc.get("/api/v1/transactions?state=overdue&flow=orders&limit=2", headers=AUTH)
            return status, json.loads(body)

        status, first = overdue()
        assert status == 200, first
        assert [i["correlation_id"] for i in first["items"]] == ["SO-1", "SO-2"] and first["next_cursor"]
        status, second = sc.get(
            f"/api/v1/transactions?state=overdue&flow=orders&limit=2&cursor={first['next_cursor']}", headers=AUTH
        )
        assert [i["correlation_id"] for i in json.loads(second)["items"]] == ["SO-3", "SO-4"]
        status, body = sc.get("/api/v1/transactions/SO-0", headers=AUTH)
        assert status == 200 and json.loads(body)["destinations"][0]["state"] == "confirmed"

        proxy.stop()  # every connection cut, new ones refused
        status, body = overdue()
        assert status == 503 and "the ledger cannot be read: PostgreSQL" in body["error"]
        assert sc.get("/healthz")[0] == 200  # the process is fine; its database is not
        cli = transactions_cli(sc, "list", "--state", "overdue", token=TOKEN)
        assert cli.returncode == 1 and "syncwatch: 503: the ledger cannot be read: PostgreSQL" in cli.stderr
        proxy.start()
        status, body = overdue()
        assert status == 200 and [i["correlation_id"] for i in body["items"]] == ["SO-1", "SO-2"]
        assert body["next_cursor"] == first["next_cursor"]
        cli = transactions_cli(sc, "list", "--state", "overdue", "--all", "--limit", "3", token=TOKEN)
        assert cli.returncode == 0 and "4 overdue transaction(s)" in cli.stdout, cli.stderr
        sc.stop()
        assert SECRET not in sc.log()
    finally:
        proxy.close()
