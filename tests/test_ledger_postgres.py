"""The ledger's transitions on both backends, in-process against the real PostgreSQL: the same
scenario gives the same rows and metrics on SQLite and on PostgreSQL; the schema is created and
versioned by syncwatch; the DSN never appears in an error."""

from __future__ import annotations

import time

import ledger_events
import orjson
import psycopg
import pytest
from ledger_events import T0, closed, ev, run, samples
from pg_support import dsn, reset, storage_config
from prometheus_client import CollectorRegistry

from syncwatch.config.errors import ConfigError
from syncwatch.config.load import load_config
from syncwatch.config.models import Config
from syncwatch.intake.replica import ReplicaRole
from syncwatch.ledger.lease import Lease
from syncwatch.ledger.postgres_store import PG_SCHEMA_VERSION, PostgresStore
from syncwatch.ledger.schema import STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_SOURCE
from syncwatch.ledger.store import StoreBusy
from syncwatch.ledger.transitions import Ledger
from syncwatch.metrics.registry import Metrics


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, pg_db, tmp_path):
    """storage.* for one backend; PostgreSQL's tables are emptied before each test."""
    if request.param == "sqlite":
        return {"data_dir": str(tmp_path / "data")}
    reset(pg_db)
    return {"data_dir": str(tmp_path / "data"), **storage_config(pg_db, tmp_path)}


def make_config(storage: dict, **cfg) -> Config:
    return Config.model_validate(
        {"storage": {**storage, "expire_after": "1h"}, "flows": {"orders": {"deadline": "60s"}}, **cfg}
    )


def closed_rows(ledger: Ledger, db: str) -> dict:
    """closed_tx as (outcome, lag, attempts, timeline) per key, from whichever backend holds it."""
    if ledger.config.storage.backend == "sqlite":
        return closed(ledger.config.storage.ledger_path)
    with psycopg.connect(dsn(db)) as conn:
        rows = conn.execute("SELECT corr, dest, flow, outcome, lag, attempts, timeline FROM closed_tx").fetchall()
    return {r[:3]: (r[3], r[4], r[5], orjson.loads(r[6]) if r[6] else None) for r in rows}


def test_every_transition_gives_the_same_rows_and_metrics_on_both_backends(backend, pg_db):
    ledger_events.reset_ids()  # the same span IDs on both backends
    now = [T0]
    metrics = Metrics(CollectorRegistry())
    ledger = Ledger(make_config(backend), metrics, clock=lambda: now[0])
    run(ledger, now)
    rows, overdue = closed_rows(ledger, pg_db), samples(metrics)
    now[0] = T0 + 3700
    ledger.tick(now[0])  # expires o-4 and o-5, then sweeps what closed before the horizon
    after, final = closed_rows(ledger, pg_db), samples(metrics)
    assert sorted(ledger.pending) == []
    ledger.close()
    assert {k[0]: v[0] for k, v in rows.items()} == {
        "o-0": "confirmed",
        "o-1": "confirmed",  # failed, then confirmed: the confirm replaces the fail
        "o-2": "confirmed",
        "o-3": "confirmed",
        "early": "confirmed",
    }
    assert rows[("early", "erp", "orders")][1] == 12.0  # confirm before source: the lag once the source came
    assert rows[("o-0", "erp", "orders")][1] == 6.0
    assert rows[("o-2", "erp", "orders")][2] == 2  # the late attempt joined the timeline
    assert len(rows[("o-3", "erp", "orders")][3]["duplicates"]) == 1  # the redelivered batch added none
    tx = (("destination", "erp"), ("flow", "orders"), ("source", "storefront"))
    assert overdue[("syncwatch_transactions_overdue", tx)] == 2
    assert {k[0]: v[0] for k, v in after.items()} == {"o-4": "expired", "o-5": "expired"}
    assert final[("syncwatch_duplicate_applies_total", tx[:2])] == 1
    assert final[("syncwatch_transactions_total", (*tx[:2], ("outcome", "expired"), tx[2]))] == 2
    assert final[("syncwatch_transactions_total", (*tx[:2], ("outcome", "confirmed"), tx[2]))] == 5
    assert final[("syncwatch_transactions_overdue", tx)] == 0


def test_open_transactions_survive_a_restart_on_both_backends(backend, pg_db):
    now = [T0]
    ledger = Ledger(make_config(backend), Metrics(CollectorRegistry()), clock=lambda: now[0])
    ledger.record([ev(STAGE_SOURCE, "o-1", T0), ev(STAGE_ATTEMPT, "o-1", T0 + 1, attempt=1, code="503")])
    ledger.record([ev(STAGE_SOURCE, "o-2", T0)])
    ledger.record([ev(STAGE_CONFIRM, "o-2", T0 + 2)])
    ledger.close()
    metrics = Metrics(CollectorRegistry())
    again = Ledger(make_config(backend), metrics, clock=lambda: now[0])
    assert again.load() == 1
    tx = {"flow": "orders", "source": "storefront", "destination": "erp"}
    assert metrics.registry.get_sample_value("syncwatch_transactions_pending", tx) == 1
    again.record([ev(STAGE_CONFIRM, "o-2", T0 + 3)])  # the same key confirmed again after the restart
    again.record([ev(STAGE_ATTEMPT, "o-1", T0 + 4, attempt=2, code="200"), ev(STAGE_CONFIRM, "o-1", T0 + 5)])
    rows = closed_rows(again, pg_db)
    again.close()
    assert rows[("o-1", "erp", "orders")][:3] == ("confirmed", 5.0, 2)
    assert rows[("o-2", "erp", "orders")][:2] == ("confirmed", 2.0)  # the first confirm's lag stays


def test_the_schema_is_created_once_and_versioned(pg_db, tmp_path):
    reset(pg_db)
    cfg = make_config(storage_config(pg_db, tmp_path))
    PostgresStore(cfg).close()
    PostgresStore(cfg).close()  # a second start finds the schema and keeps it
    with psycopg.connect(dsn(pg_db)) as conn:
        assert conn.execute("SELECT value FROM meta").fetchall() == [(str(PG_SCHEMA_VERSION),)]
        conn.execute("UPDATE meta SET value='99'")
    try:
        with pytest.raises(RuntimeError, match=f"schema version 99, this syncwatch needs {PG_SCHEMA_VERSION}"):
            PostgresStore(cfg)
    finally:
        with psycopg.connect(dsn(pg_db)) as conn:
            conn.execute("UPDATE meta SET value=%s", (str(PG_SCHEMA_VERSION),))


def test_version_1_is_migrated_to_replicas_tables(pg_db, tmp_path):
    reset(pg_db)
    cfg = make_config(storage_config(pg_db, tmp_path))
    PostgresStore(cfg).close()
    with psycopg.connect(dsn(pg_db)) as conn:  # as part one of issue 16 left it
        conn.execute("DROP TABLE leader_lease, handoff, handoff_rejected")
        conn.execute("UPDATE meta SET value='1'")
    PostgresStore(cfg).close()
    with psycopg.connect(dsn(pg_db)) as conn:
        assert conn.execute("SELECT value FROM meta").fetchall() == [("2",)]
        assert conn.execute("SELECT count(*) FROM handoff").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM handoff_rejected").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM leader_lease").fetchone() == (0,)


def open_corrs(db: str) -> set[str]:
    with psycopg.connect(dsn(db)) as conn:
        return {r[0] for r in conn.execute("SELECT corr FROM open_tx")}


def test_a_leader_whose_lease_was_taken_writes_nothing(pg_db, tmp_path):
    """Fencing: every write transaction of a leader checks its lease term first, so an old leader
    that paused past its ttl (GC, SIGSTOP, a stalled VM) commits nothing once another took over."""
    reset(pg_db)
    cfg = make_config(storage_config(pg_db, tmp_path))
    old, new = Lease(dsn(pg_db), 1.0, 5), Lease(dsn(pg_db), 1.0, 5)
    ledger = Ledger(cfg, Metrics(CollectorRegistry()), clock=lambda: T0)
    try:
        old.renew()
        new.renew()
        assert (old.epoch(), new.epoch()) == (1, None)  # one holder at a time
        ledger.store.fence = (old.holder, 1)
        ledger.record([ev(STAGE_SOURCE, "before", T0)])
        time.sleep(1.1)  # the old leader pauses past its ttl
        new.renew()
        assert new.epoch() == 2
        with pytest.raises(StoreBusy, match="another replica leads"):
            ledger.record([ev(STAGE_SOURCE, "after", T0)])
        ledger.store.sweep(T0 + 10**9)  # its housekeeping is fenced too
        assert open_corrs(pg_db) == {"before"}
    finally:
        ledger.close()
        old.stop()
        new.stop()


def test_a_takeover_waits_for_the_old_leaders_transaction(pg_db, tmp_path):
    """The fence's row lock: a takeover cannot slip in between an old leader's check and its commit."""
    reset(pg_db)
    cfg = make_config(storage_config(pg_db, tmp_path))
    old, new = Lease(dsn(pg_db), 1.0, 5), Lease(dsn(pg_db), 1.0, 5)
    store = PostgresStore(cfg)
    try:
        old.renew()
        store.fence = (old.holder, 1)
        store.begin()  # the lease row is locked until this transaction ends
        # ... against a new term only: the holder's own renewal goes through meanwhile.
        expiry = "SELECT expires_at FROM leader_lease"
        with psycopg.connect(dsn(pg_db), autocommit=True) as conn:
            before = conn.execute(expiry).fetchone()[0]
            old.renew()
            assert conn.execute(expiry).fetchone()[0] > before
        time.sleep(1.1)  # expired meanwhile
        new.renew()
        assert new.epoch() is None  # it waited for the row (lock_timeout ttl/2) and gave up this round
        store.commit()
        new.renew()
        assert new.epoch() == 2
    finally:
        store.close()
        old.stop()
        new.stop()


def test_a_version_2_ledger_gets_the_handoff_rejected_table_without_a_new_version(pg_db, tmp_path):
    """handoff_rejected came after version 2 shipped: added where missing, the version stays 2 so
    replicas of the release before keep starting during a rolling update."""
    reset(pg_db)
    cfg = make_config(storage_config(pg_db, tmp_path))
    PostgresStore(cfg).close()
    with psycopg.connect(dsn(pg_db)) as conn:  # as the first release with replicas left it
        conn.execute("DROP TABLE handoff_rejected")
    PostgresStore(cfg).close()
    with psycopg.connect(dsn(pg_db)) as conn:
        assert conn.execute("SELECT value FROM meta").fetchall() == [("2",)]
        assert conn.execute("SELECT count(*) FROM handoff_rejected").fetchone() == (0,)


def test_bad_postgresql_settings_fail_at_start_naming_the_key(tmp_path, monkeypatch):
    secret = "postgresql://syncwatch:hunter2@db.example:5432/ledger"
    path = tmp_path / "c.yaml"
    path.write_text(f"storage:\n  backend: '{secret}'\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert err.value.key == "storage.backend" and "hunter2" not in str(err.value)
    path.write_text("storage:\n  backend: postgresql\n")
    with pytest.raises(ConfigError, match="dsn_file or dsn_env") as err:
        load_config(path, environ={})
    assert err.value.key == "storage"
    path.write_text("storage:\n  backend: postgresql\n  postgresql: {dsn_env: SW_TEST_DSN}\n")
    monkeypatch.delenv("SW_TEST_DSN", raising=False)
    with pytest.raises(ConfigError, match="SW_TEST_DSN is unset") as err:
        PostgresStore(load_config(path, environ={}))
    assert err.value.key == "storage.postgresql.dsn_env"
    # A server that refuses: the message names the setting and the reason, not the password.
    monkeypatch.setenv("SW_TEST_DSN", "postgresql://syncwatch:hunter2@127.0.0.1:1/ledger")
    with pytest.raises(ConfigError, match="cannot connect to PostgreSQL") as err:
        PostgresStore(load_config(path, environ={}))
    assert err.value.key == "storage.postgresql" and "hunter2" not in str(err.value)


def test_attempt_before_its_source_gets_the_right_deadline_on_postgresql(pg_db, tmp_path):
    reset(pg_db)
    now = [T0]
    ledger = Ledger(make_config(storage_config(pg_db, tmp_path)), Metrics(CollectorRegistry()), clock=lambda: now[0])
    ledger.record([ev(STAGE_ATTEMPT, "o-7", T0 + 5, attempt=1, code="500")])
    ledger.record([ev(STAGE_SOURCE, "o-7", T0)])
    ledger.close()
    with psycopg.connect(dsn(pg_db)) as conn:
        row = conn.execute("SELECT changed_at, deadline, attempts FROM open_tx WHERE corr='o-7'").fetchone()
    assert row == (T0, T0 + 60, 1)


def test_handed_off_batches_are_applied_once_by_the_leader(pg_db, tmp_path):
    """A follower's batch waits in the handoff table (the leader's backlog gauge shows it) until the
    leader applies it and deletes it in one transaction; the same spans handed off twice (a
    redelivery to another follower) count once."""
    reset(pg_db)
    cfg = make_config(storage_config(pg_db, tmp_path))
    follower = PostgresStore(cfg)
    lease = Lease(dsn(pg_db), 4.0, 5)
    metrics = Metrics(CollectorRegistry())
    leader = ReplicaRole(Ledger(cfg, metrics, clock=lambda: T0 + 1), metrics, lease)
    try:
        batch = [ev(STAGE_SOURCE, "h-1", T0), ev(STAGE_ATTEMPT, "h-1", T0 + 0.5, attempt=1, code="200")]
        batch.append(ev(STAGE_CONFIRM, "h-1", T0 + 0.75, idem="k-h"))
        follower.hand_off(batch)
        follower.hand_off(batch)  # redelivered
        follower.hand_off([ev(STAGE_SOURCE, "h-2", T0)])
        get = metrics.registry.get_sample_value
        lease.renew()
        leader.sync()
        assert leader.leading and get("syncwatch_leader") == 1
        leader.count_backlog()
        assert get("syncwatch_handoff_backlog_spans") == 7
        leader.drain()
        leader.count_backlog()
        assert get("syncwatch_handoff_backlog_spans") == 0
        with psycopg.connect(dsn(pg_db)) as conn:
            assert conn.execute("SELECT corr, attempts FROM closed_tx").fetchall() == [("h-1", 1)]
            assert conn.execute("SELECT corr FROM open_tx").fetchall() == [("h-2",)]
            assert conn.execute("SELECT applies FROM applies").fetchall() == [(1,)]
        tx = {"flow": "orders", "source": "storefront", "destination": "erp"}
        assert get("syncwatch_transactions_total", {**tx, "outcome": "confirmed"}) == 1
        assert get("syncwatch_transactions_pending", tx) == 1
    finally:
        leader.ledger.close()
        follower.close()
        lease.stop()


def test_a_fence_check_that_times_out_leaves_no_transaction_open(pg_db, tmp_path):
    """A fence check that fails on the server (here: it waits past statement_timeout for the lease
    row) ends its transaction: the next batch starts cleanly instead of failing forever."""
    reset(pg_db)
    storage = storage_config(pg_db, tmp_path)
    storage["postgresql"]["statement_timeout"] = "1s"
    lease = Lease(dsn(pg_db), 4.0, 5)
    ledger = Ledger(make_config(storage), Metrics(CollectorRegistry()), clock=lambda: T0)
    try:
        lease.renew()
        ledger.store.fence = (lease.holder, 1)
        with psycopg.connect(dsn(pg_db)) as blocker:
            blocker.execute("SELECT * FROM leader_lease FOR UPDATE")  # e.g. a new term being written
            with pytest.raises(psycopg.errors.QueryCanceled):
                ledger.record([ev(STAGE_SOURCE, "blocked", T0)])
        ledger.record([ev(STAGE_SOURCE, "after", T0)])
        assert open_corrs(pg_db) == {"after"}
    finally:
        ledger.close()
        lease.stop()
