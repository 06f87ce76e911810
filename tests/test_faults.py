"""Faults a real deployment meets (issue 11): a full disk, another process holding the ledger's
write lock, hostile attribute values batched with good spans. Each ends with the promise checked
through the query API, before and after a kill -9: nothing acknowledged is lost."""

from __future__ import annotations

import math
import random
import sqlite3
import threading
import time
import uuid

import pytest
from faults_support import (
    STATES,
    TOKEN,
    Api,
    Exchange,
    HealthProbe,
    attempt,
    bad_answers,
    confirm,
    export_response,
    export_with_retries,
    fill_disk,
    nan_samples,
    scrape,
    source,
    tmpfs,
    total,
    typed_request,
    wait_equal,
    wait_until,
)
from sidecar import Sidecar

pytestmark = pytest.mark.timeout(240)


def faults_config(data_dir, **flows) -> dict:
    return {
        "storage": {"data_dir": str(data_dir)},
        "api": {"token": TOKEN},
        "flows": {"orders": {"destinations": ["erp"], "deadline": "1h"}, **flows},
    }


class Exporters:
    """`n` clients, each sending requests of `per_request` source spans (correlation IDs unique to
    the request) one after another, `pause` s apart, every request retried as an OTel exporter does.

    Paced, not flat out: at full speed the WAL outgrows an 8 MB disk between two checkpoints."""

    def __init__(self, sidecar, n: int = 3, per_request: int = 20, flow: str = "orders", pause: float = 0.05):
        self.url = sidecar.otlp_http + "/v1/traces"
        self.n, self.per_request, self.flow, self.pause = n, per_request, flow, pause
        self.done: list = []  # (correlation IDs, Exchange, monotonic time of the first try)
        self.inflight: dict = {}  # client -> Exchange of the request it is sending
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def __enter__(self) -> Exporters:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=120)

    def _run(self, client: int) -> None:
        i = 0
        while not self.stop.is_set():
            corrs = [f"fd-{client}-{i}-{j}-{uuid.uuid4().hex[:8]}" for j in range(self.per_request)]
            body = typed_request([source(c, self.flow) for c in corrs]).SerializeToString()
            started = time.monotonic()
            ex = self.inflight[client] = Exchange()
            export_with_retries(self.url, body, budget=90, ex=ex)
            with self._lock:
                self.done.append((corrs, ex, started))
                del self.inflight[client]
            i += 1
            self.stop.wait(self.pause)

    def acked(self) -> list:
        with self._lock:
            return [corrs for corrs, ex, _ in self.done if ex.final == 200]

    def count(self, since: float = 0.0, status: int | None = 200) -> int:
        with self._lock:
            return sum(1 for _, ex, t in self.done if t >= since and (status is None or ex.final == status))

    def saw(self, status: int) -> int:
        """Answers with `status` so far, of finished requests and those still being retried."""
        with self._lock:
            exchanges = [ex for _, ex, _ in self.done] + list(self.inflight.values())
        return sum(1 for ex in exchanges for s, _, _ in list(ex.answers) if s == status)


def assert_all_recorded(api: Api, exporters: Exporters, flow: str = "orders", sample: int = 150) -> None:
    """Every correlation ID of every acknowledged request is a pending transaction of `flow`: the
    whole list, and single-transaction pages for those retried after a 503 plus a random sample."""
    acked = [c for corrs in exporters.acked() for c in corrs]
    pending = {item["correlation_id"] for item in api.listing("pending", flow)}
    missing = [c for c in acked if c not in pending]
    assert not missing, (
        f"{len(missing)} of {len(acked)} acknowledged transactions are not in the ledger, e.g. {missing[:3]}"
    )
    retried = [c for corrs, ex, _ in exporters.done if ex.final == 200 and len(ex.answers) > 1 for c in corrs]
    for corr in retried[:sample] + random.sample(acked, min(sample, len(acked))):
        status, record = api.transaction(corr)
        assert status == 200, (corr, status, record)
        assert [(d["flow"], d["destination"], d["state"]) for d in record["destinations"]] == [(flow, "erp", "pending")]


def test_full_disk_answers_503_and_loses_no_acknowledged_span(tmp_path, make_sidecar):
    """With the data dir's disk full, exporters get 503 + Retry-After and retry the same bytes;
    once space is freed their retries succeed, and every request ever answered 200 has all its
    transactions in the ledger, also after kill -9 (a retry must never be acknowledged unwritten)."""
    with tmpfs(tmp_path / "disk", "8m") as disk:
        sc = make_sidecar(faults_config(disk / "data"), name="sc")
        api = Api(sc)
        try:
            with HealthProbe(sc) as probe, Exporters(sc) as exporters:
                wait_until(
                    lambda: exporters.count() >= 10, 30, message="10 requests acknowledged before the disk fills"
                )
                filler = fill_disk(disk)
                wait_until(lambda: exporters.saw(503), 60, message="a 503 once the disk is full")
                time.sleep(6)  # retries and new requests against the full disk
                filler.unlink()
                freed = time.monotonic()
                wait_until(
                    lambda: exporters.count(since=freed) >= 3 * exporters.n,
                    60,
                    message="requests sent after the disk was freed acknowledged",
                )
            probe.check()
            assert bad_answers(ex for _, ex, _ in exporters.done) == []
            unfinished = [(corrs[0], ex.answers[-1][:2]) for corrs, ex, _ in exporters.done if ex.final != 200]
            assert not unfinished, f"requests whose retries never succeeded: {unfinished[:3]}"
            # The case that lost spans: a request answered 503, then 200 on a retry of the same bytes.
            assert any(ex.final == 200 and ex.answers[0][0] == 503 for _, ex, _ in exporters.done)
            assert_all_recorded(api, exporters)

            sc.kill9()
            sc.start()
            assert_all_recorded(api, exporters)
        finally:
            sc.stop()


def send_sources(sc, corrs, flow, at=None) -> None:
    body = typed_request([source(c, flow, at) for c in corrs]).SerializeToString()
    ex = export_with_retries(sc.otlp_http + "/v1/traces", body, budget=30)
    assert ex.final == 200, ex.answers[-1][:2]
    assert export_response(ex.answers[-1][2]).partial_success.rejected_spans == 0


def expired_agree(api: Api, sc, flow: str) -> tuple[float, int]:
    """(expired by the metric, expired rows in the ledger), read in that order: the metric follows
    the commit, so it may lag behind the ledger for a moment but never run ahead of it."""
    counted = total(scrape(sc), "syncwatch_transactions_total", outcome="expired", flow=flow)
    rows = len(api.listing("expired", flow))
    assert counted <= rows, f"the metric says {counted} expired, the ledger has {rows} expired rows"
    return counted, rows


def truncate_wal(ledger_path) -> None:
    """Copy the WAL into the database and truncate it, so that the next commit has to grow it."""
    db = sqlite3.connect(ledger_path, timeout=10)
    try:
        wait_until(
            lambda: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0,
            10,
            message="WAL checkpoint(TRUNCATE)",
        )
    finally:
        db.close()


def test_expiry_on_a_full_disk_is_counted_only_when_written(tmp_path, make_sidecar):
    """Transactions that become due for expiry while the disk is full stay open (metric and ledger
    agree), expire once space is freed without a restart, and are not expired twice after kill -9."""
    n = 300
    with tmpfs(tmp_path / "disk", "8m") as disk:
        sc = make_sidecar(
            {
                **faults_config(disk / "data", exp={"destinations": ["erp"], "deadline": "2s"}),
                "storage": {"data_dir": str(disk / "data"), "expire_after": "3s"},
            },
            name="sc",
        )
        api = Api(sc)
        try:
            with HealthProbe(sc) as probe:
                send_sources(sc, [f"exp-{i}" for i in range(n)], "exp")
                sent = time.monotonic()
                truncate_wal(disk / "data" / "ledger.db")
                filler = fill_disk(disk)
                assert time.monotonic() - sent < 2.5, "the disk must be full before the transactions are due"
                while time.monotonic() - sent < 8:  # due at +3 s: expiries fail on the full disk
                    expired_agree(api, sc, "exp")
                    time.sleep(0.5)
                filler.unlink()
                wait_equal(
                    lambda: expired_agree(api, sc, "exp"),
                    (n, n),
                    20,
                    message="(expired by the metric, expired rows) once the disk has space again",
                )
            probe.check()
            tx = dict(flow="exp", source="storefront", destination="erp")
            assert sc.metric("syncwatch_transactions_pending", None, **tx) in (None, 0)
            assert sc.metric("syncwatch_transactions_overdue", None, **tx) in (None, 0)

            sc.kill9()
            sc.start()
            time.sleep(1)  # a few ticks of the new process
            assert expired_agree(api, sc, "exp") == (0, n)  # nothing reloaded as open, nothing expired twice
            assert api.listing("pending", "exp") == []
        finally:
            sc.stop()


class HeldWriteLock:
    """Another process's view of the ledger: a connection holding BEGIN IMMEDIATE (the write lock)."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, timeout=10, isolation_level=None)

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc):
        self.db.execute("ROLLBACK")
        self.db.close()


def test_held_write_lock_delays_but_never_loses_intake_or_expiry(tmp_path, make_sidecar):
    """While another process holds the ledger's write lock for 12 s, due transactions expire as
    soon as it is released (no restart needed), and spans sent meanwhile are answered 503 and
    recorded on retry, or 200 and durable."""
    n = 200
    sc = make_sidecar(
        {
            **faults_config(tmp_path / "data", exp={"destinations": ["erp"], "deadline": "1s"}),
            "storage": {"data_dir": str(tmp_path / "data"), "expire_after": "2s"},
        },
        name="sc",
    )
    api = Api(sc)
    with HealthProbe(sc) as probe:
        send_sources(sc, [f"lock-exp-{i}" for i in range(n)], "exp")
        with Exporters(sc, n=2, per_request=20) as exporters:
            wait_until(lambda: exporters.count() >= 5, 30, message="requests acknowledged before the lock")
            with HeldWriteLock(tmp_path / "data" / "ledger.db"):
                locked = time.monotonic()
                while time.monotonic() - locked < 12:  # due at +2 s
                    expired_agree(api, sc, "exp")
                    time.sleep(0.5)
            released = time.monotonic()
            wait_equal(
                lambda: expired_agree(api, sc, "exp"),
                (n, n),
                15,
                message="(expired by the metric, expired rows) after the lock was released",
            )
            wait_until(lambda: exporters.count(since=released) >= 3, 30, message="intake after the lock")
        probe.check()
    assert bad_answers(ex for _, ex, _ in exporters.done) == []
    assert [ex.answers[-1][:2] for _, ex, _ in exporters.done if ex.final != 200] == []
    # Intake did meet the lock: requests sent before its release were answered after it was taken.
    assert any(started < released and ex.times[-1] > locked for _, ex, started in exporters.done)
    assert_all_recorded(api, exporters)
    tx = dict(flow="exp", source="storefront", destination="erp")
    assert sc.metric("syncwatch_transactions_overdue", None, **tx) in (None, 0)

    sc.kill9()
    sc.start()
    assert_all_recorded(api, exporters)
    assert expired_agree(api, sc, "exp") == (0, n)


CHANGED_AT, RESEND, HTTP_CODE, CORR = (
    "syncwatch.source.changed_at",
    "http.request.resend_count",
    "http.response.status_code",
    "syncwatch.correlation_id",
)
# (id, attribute, value, the stage of the span carrying it, what syncwatch must do with that span):
# "reject" it in partial_success naming the attribute; or, where rejecting and folding the value
# into its valid range are both sound (issue 11, item 7), "reject or fold" with no harm done.
HOSTILE = [
    ("changed_at=NaN", CHANGED_AT, math.nan, "source", "reject"),
    ("changed_at='NaN'", CHANGED_AT, "NaN", "source", "reject"),
    ("changed_at=inf", CHANGED_AT, math.inf, "source", "reject"),
    ("changed_at=-inf", CHANGED_AT, -math.inf, "source", "reject"),
    ("changed_at=-1e11", CHANGED_AT, -1e11, "source", "reject"),
    ("changed_at=year 1", CHANGED_AT, "0001-01-01T00:00:00Z", "source", "reject"),
    ("changed_at=1e300", CHANGED_AT, 1e300, "source", "reject"),
    ("resend_count=2**70 (string)", RESEND, str(2**70), "attempt", "reject"),
    ("resend_count=2**70 (double)", RESEND, float(2**70), "attempt", "reject"),
    ("resend_count=inf", RESEND, math.inf, "attempt", "reject"),
    ("resend_count=-5", RESEND, -5, "attempt", "reject"),
    ("resend_count=2**63-1", RESEND, 2**63 - 1, "attempt", "reject or fold"),
    ("status_code=99999", HTTP_CODE, 99999, "attempt", "reject or fold"),
    ("status_code=-1", HTTP_CODE, -1, "attempt", "reject or fold"),
    ("status_code='abc'", HTTP_CODE, "abc", "attempt", "reject or fold"),
    ("correlation ID of 1 MiB", CORR, "x" * (1 << 20), "source", "reject"),
    ("correlation ID with a newline", CORR, "order-7\n2030-01-01 ERROR syncwatch forged line", "source", "reject"),
]


def good_transaction(corr: str, now: float) -> list[dict]:
    """Source (changed 2 s ago), one attempt, confirm: a transaction with a sync lag of 2 s."""
    return [source(corr, at=now - 2), attempt(corr, at=now - 1, **{HTTP_CODE: 200}), confirm(corr, at=now)]


@pytest.fixture(scope="module")
def hostile_sidecar(tmp_path_factory):
    """One sidecar for all the hostile cases: each compares metrics before and after its own requests
    and uses correlation IDs of its own, so they need no fresh process each (a NaN left behind by one
    still fails the ones after it)."""
    sc = Sidecar(tmp_path_factory.mktemp("hostile"), faults_config(tmp_path_factory.mktemp("hostile-data")))
    yield sc.start()
    sc.stop()


@pytest.mark.parametrize("name, attribute, value, stage, expect", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_attribute_is_rejected_alone(hostile_sidecar, name, attribute, value, stage, expect):
    """The span carrying it is refused in partial_success; the good spans batched with it, in the
    same request and in concurrent ones, are recorded; nothing answers 5xx or turns a metric NaN."""
    from concurrent.futures import ThreadPoolExecutor

    sc = hostile_sidecar
    api = Api(sc)
    before = scrape(sc)
    now = time.time()
    bad_corr = value if attribute == CORR else f"hostile-{uuid.uuid4().hex[:8]}"
    if stage == "source":
        bad_client = [source(bad_corr, at=now - 2, **({} if attribute == CORR else {attribute: value}))]
        if attribute != CORR:
            bad_client.append(confirm(bad_corr, at=now))
    else:
        bad_client = [
            source(bad_corr, at=now - 2),
            attempt(bad_corr, at=now - 1, **{attribute: value}),
            confirm(bad_corr, at=now),
        ]
    good = [f"good-{i}-{uuid.uuid4().hex[:8]}" for i in range(5)]
    requests = [typed_request(bad_client, good_transaction(good[0], now))]
    requests += [typed_request(good_transaction(c, now)) for c in good[1:]]
    url = sc.otlp_http + "/v1/traces"
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda r: export_with_retries(url, r.SerializeToString(), budget=0), requests))

    assert [ex.final for ex in answers] == [200] * len(requests), [ex.answers[-1][:2] for ex in answers]
    mixed = export_response(answers[0].answers[-1][2]).partial_success
    assert [export_response(ex.answers[-1][2]).partial_success.rejected_spans for ex in answers[1:]] == [0] * 4
    if expect == "reject" or mixed.rejected_spans:
        assert mixed.rejected_spans == 1, (mixed.rejected_spans, mixed.error_message)
        named = "correlation" if attribute == CORR else attribute
        assert named in mixed.error_message.lower(), mixed.error_message
    after = scrape(sc)
    assert (
        total(after, "syncwatch_spans_total", result="rejected")
        - total(before, "syncwatch_spans_total", result="rejected")
        == mixed.rejected_spans
    )
    assert total(after, "syncwatch_dropped_total") - total(before, "syncwatch_dropped_total") >= mixed.rejected_spans
    assert nan_samples(after) == []
    if not mixed.rejected_spans and attribute == HTTP_CODE:  # folded: the raw value is no label
        assert total(after, "syncwatch_attempts_total", status_code=str(value)) == 0, (
            f"http.response.status_code {value!r} became a status_code label of its own"
        )

    for corr in good:
        status, record = api.transaction(corr)
        assert status == 200, (corr, status, record)
        [dest] = record["destinations"]
        assert dest["state"] == "confirmed" and dest["lag_seconds"] == pytest.approx(2.0, abs=0.01), dest
    if attribute == CORR:
        if len(value) < 1000:
            assert api.transaction(value)[0] == 404  # refused, so unknown
    else:
        status, record = api.transaction(bad_corr)
        assert status == 200, (status, record)
        assert record["destinations"][0]["state"] == "confirmed"
    for state in STATES:
        api.listing(state)  # each answers 200
