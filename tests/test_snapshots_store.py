"""Snapshot intake into the embedded SQLite store: redaction before storage, truncation, retention
with a controllable clock, store failures counted as drops, and the metrics a user relies on."""

import asyncio
import hashlib
import hmac
import json

import pytest
from snapshot_data import HOUR, SECRETS, T0, Clock, make_request, order_body, sample

from syncwatch.config.models import Config
from syncwatch.metrics.registry import Metrics
from syncwatch.snapshots import SnapshotIntake


@pytest.fixture
def make_intake(tmp_path):
    made = []

    def make(snapshots=None, clock=None, **top):
        cfg = Config.model_validate(
            {"storage": {"data_dir": str(tmp_path / "data")}, "snapshots": snapshots or {}, **top}
        )
        metrics = Metrics()
        intake = SnapshotIntake(cfg, metrics, clock=clock or Clock())
        made.append(intake)
        return intake, metrics

    yield make


def run(coro):
    return asyncio.run(coro)


def test_payloads_are_stored_redacted_and_nothing_on_disk_holds_the_secrets(make_intake, tmp_path):
    intake, metrics = make_intake(snapshots={"redact": {"patterns": {"stripe_key": r"sk_live_\w+"}}})

    async def go():
        await intake.start()
        rejected, msg = await intake.export_logs(
            make_request(
                {"corr": "ord-1", "direction": "request", "body": order_body(), "span_id": b"\x0a" * 8},
                {
                    "corr": "ord-1",
                    "direction": "response",
                    "body": b'{"status":"created","token":"sk_live_abc123"}',
                    "span_id": b"\x0a" * 8,
                },
                {
                    "corr": "ord-1",
                    "direction": "response",
                    "body": {"erp_doc": "4711", "email": "jane.doe@example.com"},
                },
                {"body": "an ordinary log line, not a payload"},
            )
        )
        found = await intake.find("ord-1")
        await intake.stop()
        return rejected, msg, found

    rejected, msg, found = run(go())
    assert (rejected, msg) == (0, "")
    assert [s.direction for s in found] == ["request", "response", "response"]
    request = json.loads(found[0].body)
    assert request["order_id"] == "SO-1" and request["lines"] == [{"sku": "A-1", "qty": 2}]
    assert request["customer"]["password"].startswith("[REDACTED:password:")
    assert found[0].span_id == b"\x0a" * 8 and found[0].size == len(order_body().encode())
    # The body hash is keyed with the data dir's redaction key: without it, no guess can be tested.
    key = (tmp_path / "data" / "snapshot-redaction.key").read_bytes().strip()
    assert found[0].body_hmac == hmac.digest(key, order_body().encode(), "sha256")
    assert found[0].body_hmac != hashlib.sha256(order_body().encode()).digest()
    assert json.loads(found[2].body)["email"].startswith("[REDACTED:email:")
    # Every byte syncwatch wrote (database, WAL), decompressed where it is compressed:
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir() if p.is_file())
    shown = b"".join(s.body for s in found)
    for secret in SECRETS:
        assert secret.encode() not in stored and secret.encode() not in shown, secret
    assert sample(metrics, "syncwatch_snapshots_total", direction="request", result="stored") == 1
    assert sample(metrics, "syncwatch_snapshots_total", direction="response", result="stored") == 2
    assert sample(metrics, "syncwatch_log_records_total", result="not_payload") == 1
    assert sample(metrics, "syncwatch_snapshot_redactions_total", kind="password") == 1
    assert sample(metrics, "syncwatch_snapshot_redactions_total", kind="email") == 2
    assert sample(metrics, "syncwatch_snapshot_redactions_total", kind="stripe_key") == 1  # in the note
    assert sample(metrics, "syncwatch_snapshot_redactions_total", kind="token") == 1  # key rule first
    assert sample(metrics, "syncwatch_snapshot_store_bytes") > 0
    assert sample(metrics, "syncwatch_snapshot_retention_seconds") == 72 * HOUR


def test_payloads_without_correlation_id_or_with_a_bad_direction_are_rejected_and_counted(make_intake):
    intake, metrics = make_intake()

    async def go():
        await intake.start()
        out = await intake.export_logs(
            make_request(
                {"direction": "request", "body": "no correlation id"},
                {"corr": "c1", "direction": "sideways", "body": "?"},
                {"corr": "c1", "direction": "request", "body": "fine"},
            )
        )
        await intake.stop()
        return out

    rejected, message = run(go())
    assert rejected == 2
    assert "without a correlation ID" in message and "must be request or response" in message
    assert sample(metrics, "syncwatch_dropped_total", reason="snapshot_uncorrelated") == 1
    assert sample(metrics, "syncwatch_dropped_total", reason="snapshot_invalid_direction") == 1
    assert sample(metrics, "syncwatch_snapshots_total", direction="request", result="dropped") == 1
    assert sample(metrics, "syncwatch_snapshots_total", direction="request", result="stored") == 1


def test_a_correlation_id_over_the_limit_is_rejected_as_such(make_intake):
    intake, metrics = make_intake(limits={"max_correlation_id_length": 64})

    async def go():
        await intake.start()
        out = await intake.export_logs(
            make_request(
                {"corr": "x" * 65, "direction": "response", "body": "too long an ID"},
                {"corr": "SO-1\nlevel=ERROR forged", "direction": "response", "body": "a newline in the ID"},
                {"corr": "y" * 64, "direction": "response", "body": "fine"},
            )
        )
        found = await intake.find("y" * 64)
        await intake.stop()
        return out, found

    (rejected, message), found = run(go())
    assert rejected == 2 and message == (
        "1 x correlation ID longer than 64 characters (limits.max_correlation_id_length); "
        "1 x correlation ID contains control characters"
    )
    assert sample(metrics, "syncwatch_dropped_total", reason="snapshot_correlation_id_too_long") == 1
    assert sample(metrics, "syncwatch_dropped_total", reason="snapshot_correlation_id_invalid") == 1
    assert sample(metrics, "syncwatch_dropped_total", reason="snapshot_uncorrelated") == 0
    assert sample(metrics, "syncwatch_snapshots_total", direction="response", result="dropped") == 2
    assert [s.body for s in found] == [b"fine"]


def test_a_body_over_the_cap_is_truncated_keeping_its_full_size_and_keyed_hash(make_intake, tmp_path):
    intake, metrics = make_intake(snapshots={"max_bytes": 1000})
    body = json.dumps({"items": [{"sku": f"SKU-{i:05d}", "note": "é" * 3} for i in range(200)]})

    async def go():
        await intake.start()
        await intake.export_logs(make_request({"corr": "big", "direction": "request", "body": body}))
        found = await intake.find("big")
        await intake.stop()
        return found

    (snap,) = run(go())
    assert snap.truncated and len(snap.body) <= 1000 and len(snap.body) >= 990
    snap.body.decode("utf-8")  # cut on a character boundary
    key = (tmp_path / "data" / "snapshot-redaction.key").read_bytes().strip()
    assert snap.size == len(body.encode()) and snap.body_hmac == hmac.digest(key, body.encode(), "sha256")
    assert sample(metrics, "syncwatch_snapshot_truncated_total") == 1


def test_a_huge_body_is_redacted_on_the_head_that_is_kept_only(make_intake):
    """Redaction work per payload is bounded by what is kept: a 12 MB body costs no more than
    max_bytes + the margin, and the kept head is redacted by the same rules (JSON key rules
    through its pairs, a bracketed value whole)."""
    from syncwatch.snapshots import REDACT_MARGIN

    intake, metrics = make_intake(snapshots={"max_bytes": 4096})
    head = {
        "customer": {"password": "hunter 2", "api key": "k-77", "secret": {"pin": "9911"}},
        "payment": {"card": "4111 1111 1111 1111", "iban": "de89 3704 0044 0532 0130 00"},
        "note": "jane.doe@example.com",
    }
    body = json.dumps({**head, "lines": [{"sku": f"SKU-{i:07d}", "qty": 1} for i in range(400_000)]})
    assert len(body) > 12_000_000
    seen = []  # how much text each redaction call was given to work on
    redact_body, redact_head = intake.redactor.redact_body, intake.redactor.redact_head

    def spy_body(body, *rest):
        seen.append(len(body))
        return redact_body(body, *rest)

    def spy_head(data, size):
        seen.append(min(len(data), size))
        return redact_head(data, size)

    intake.redactor.redact_body, intake.redactor.redact_head = spy_body, spy_head

    async def go():
        await intake.start()
        out = await intake.export_logs(make_request({"corr": "huge", "direction": "request", "body": body}))
        found = await intake.find("huge")
        await intake.stop()
        return out, found

    out, (snap,) = run(go())
    assert out == (0, "") and snap.truncated and len(snap.body) <= 4096 and snap.size == len(body.encode())
    assert seen and max(seen) <= 4096 + REDACT_MARGIN
    kept = snap.body.decode()
    for secret in ("hunter", "k-77", "9911", "1111 1111", "0532", "jane.doe"):
        assert secret not in kept, secret
    assert '"lines": [{"sku": "SKU-0000000"' in kept


def test_retention_keeps_a_snapshot_at_71h59m_and_removes_it_after_72h_and_one_sweep(make_intake):
    clock = Clock()
    intake, metrics = make_intake(clock=clock)

    async def go():
        await intake.start()
        await intake.export_logs(make_request({"corr": "r1", "direction": "request", "body": "old"}))
        clock.t += 2 * HOUR
        await intake.export_logs(make_request({"corr": "r2", "direction": "request", "body": "newer"}))
        clock.t = T0 + 71 * HOUR + 59 * 60
        assert await intake.sweep_now() == 0
        assert [s.body for s in await intake.find("r1")] == [b"old"]
        assert sample(metrics, "syncwatch_snapshot_oldest_age_seconds") == 71 * HOUR + 59 * 60
        clock.t = T0 + 72 * HOUR + 1
        assert await intake.find("r1") != []  # still there until the sweep runs
        assert await intake.sweep_now() == 1
        assert await intake.find("r1") == []
        assert [s.body for s in await intake.find("r2")] == [b"newer"]
        assert sample(metrics, "syncwatch_snapshot_oldest_age_seconds") == pytest.approx(70 * HOUR + 1)
        clock.t = T0 + 80 * HOUR
        assert await intake.sweep_now() == 1
        assert sample(metrics, "syncwatch_snapshot_oldest_age_seconds") == 0
        await intake.stop()

    run(go())


def test_sweeps_in_batches_until_everything_expired_is_gone(make_intake):
    clock = Clock()
    intake, metrics = make_intake(snapshots={"sweep_batch": 7}, clock=clock)

    async def go():
        await intake.start()
        for i in range(5):
            await intake.export_logs(
                make_request(*({"corr": f"b{i}", "direction": "request", "body": f"x{j}"} for j in range(10)))
            )
        clock.t += 73 * HOUR
        assert await intake.sweep_now() == 50
        assert await intake.find("b3") == []
        await intake.stop()

    run(go())


def test_a_full_store_drops_snapshots_with_a_reason_and_recovers_after_a_sweep(make_intake):
    clock = Clock()
    # A real SQLITE_FULL: the snapshot file may not grow beyond ~200 KiB.
    intake, metrics = make_intake(snapshots={"max_store_bytes": 200_000}, clock=clock)
    noise = "".join(f"{(i * 7919) % 100003:06d}" for i in range(6000))  # barely compressible

    async def go():
        await intake.start()
        results = []
        for i in range(30):
            results.append(
                await intake.export_logs(make_request({"corr": f"f{i}", "direction": "request", "body": noise}))
            )
            clock.t += 1
        assert sample(metrics, "syncwatch_snapshot_store_up") == 0
        # Expire what is there; after the failure back-off, writes succeed again.
        clock.t += 73 * HOUR
        await intake.sweep_now()
        ok = await intake.export_logs(make_request({"corr": "after", "direction": "response", "body": "small"}))
        found = await intake.find("after")
        await intake.stop()
        return results, ok, found

    results, ok, found = run(go())
    full = [r for r in results if r[0]]
    assert full and all(r == (1, full[0][1]) for r in full) and "full" in full[0][1]
    dropped = sample(metrics, "syncwatch_dropped_total", reason="snapshot_store_full")
    assert dropped >= 1 and dropped + sample(
        metrics, "syncwatch_dropped_total", reason="snapshot_store_unavailable"
    ) == len(full)
    assert sample(metrics, "syncwatch_snapshots_total", direction="request", result="dropped") == len(full)
    assert ok == (0, "") and [s.body for s in found] == [b"small"]
    assert sample(metrics, "syncwatch_snapshot_store_up") == 1


def test_an_unwritable_store_does_not_stop_the_intake(make_intake, tmp_path):
    # The data dir holds a directory where the snapshot database should be: it cannot open.
    (tmp_path / "data" / "snapshots.db").mkdir(parents=True)
    intake, metrics = make_intake()

    async def go():
        await intake.start()  # does not raise
        out = await intake.export_logs(make_request({"corr": "x", "direction": "request", "body": "b"}))
        await intake.stop()
        return out

    rejected, message = run(go())
    assert rejected == 1 and "snapshot store failing" in message
    assert sample(metrics, "syncwatch_dropped_total", reason="snapshot_store_unavailable") == 1
    assert sample(metrics, "syncwatch_snapshot_store_up") == 0


def test_the_redaction_key_survives_restarts_so_markers_stay_comparable(make_intake):
    async def store_and_read(intake, corr):
        await intake.start()
        await intake.export_logs(make_request({"corr": corr, "direction": "request", "body": order_body()}))
        (snap,) = await intake.find(corr)
        await intake.stop()
        return json.loads(snap.body)["payment"]["card_number"]

    first = run(store_and_read(make_intake()[0], "k1"))
    second = run(store_and_read(make_intake()[0], "k2"))
    assert first == second and first.startswith("[REDACTED:card_number:")


def test_snapshots_compress_with_a_trained_dictionary(make_intake, tmp_path):
    from syncwatch.snapshots.store import Codec

    intake, metrics = make_intake()
    bodies = [
        json.dumps(
            {
                "order_id": f"SO-{i}",
                "lines": [{"sku": f"SKU-{i * j % 997:04d}", "qty": j} for j in range(30)],
                "shipping": {"method": "express", "carrier": "DHL", "city": ["Berlin", "Paris"][i % 2]},
            }
        )
        for i in range(Codec.TRAIN_SAMPLES + 200)
    ]

    async def go():
        await intake.start()
        for i in range(0, len(bodies), 100):
            await intake.export_logs(
                make_request(
                    *(
                        {"corr": f"z{i + j}", "direction": "request", "body": b}
                        for j, b in enumerate(bodies[i : i + 100])
                    )
                )
            )
        for _ in range(100):  # the dictionary trains in the background
            await intake.export_logs(make_request({"corr": "late", "direction": "request", "body": bodies[0]}))
            found = await intake.find("late")
            if found[-1].dict_id:
                break
            await asyncio.sleep(0.05)
        await intake.stop()
        return found[-1]

    async def reopen():
        again, _ = make_intake()
        await again.start()
        snaps = await again.find("late")
        await again.stop()
        return snaps

    last = run(go())
    assert last.dict_id == 1 and last.stored_bytes < len(bodies[0]) / 4
    # After a restart the dictionary is loaded from the store and old rows still read.
    snaps = run(reopen())
    assert snaps and all(s.body == bodies[0].encode() for s in snaps)


def test_a_large_log_request_is_read_off_the_event_loop(make_intake, monkeypatch):
    """Key-value map bodies are converted value by value; a large request is not read on the loop
    (every other request, and /healthz, would wait for it)."""
    import threading

    import syncwatch.snapshots as snapshots_mod

    intake, _ = make_intake()
    threads = []
    original = snapshots_mod.payload_records

    def spy(*args):
        threads.append(threading.current_thread())
        return original(*args)

    monkeypatch.setattr(snapshots_mod, "payload_records", spy)
    big = {"lines": [{"sku": f"SKU-{i:06d}", "qty": i, "note": "x" * 40} for i in range(8_000)]}  # ~0.5 MB

    async def go():
        await intake.start()
        loop_thread = threading.current_thread()
        small = await intake.export_logs(make_request({"corr": "small", "direction": "request", "body": "hi"}))
        large = await intake.export_logs(make_request({"corr": "large", "direction": "request", "body": big}))
        found = await intake.find("large")
        await intake.stop()
        return loop_thread, small, large, found

    loop_thread, small, large, found = run(go())
    assert small == (0, "") and large == (0, "") and json.loads(found[0].body)["lines"][-1]["qty"] == 7_999
    assert threads[0] is loop_thread  # a small one is read in place: no thread hop per request
    assert threads[1] is not loop_thread


def test_snapshots_stored_with_an_unkeyed_hash_never_show_it_after_the_upgrade(make_intake, tmp_path):
    """Rows written before the body hash was keyed hold a plain SHA-256 (anyone could test
    guesses for a redacted value against it): after the upgrade they show no hash at all."""
    import sqlite3

    import zstandard

    from syncwatch.snapshots.sqlite_store import DDL

    (tmp_path / "data").mkdir()
    conn = sqlite3.connect(tmp_path / "data" / "snapshots.db")
    conn.executescript(DDL)  # the schema as it was: no hash_keyed column
    old = b'{"cvv":"[REDACTED:cvv:00000000]"}'
    conn.execute(
        "INSERT INTO snapshots(corr, direction, received, time, trace_id, span_id, flow, dest, content_type, size, "
        "sha256, truncated, redactions, dict_id, body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            "old-1",
            "request",
            T0,
            T0,
            b"\x01" * 16,
            b"\x02" * 8,
            None,
            None,
            "json",
            13,
            hashlib.sha256(b'{"cvv":"739"}').digest(),
            0,
            1,
            0,
            zstandard.ZstdCompressor().compress(old),
        ),
    )
    conn.commit()
    conn.close()
    intake, _ = make_intake()

    async def go():
        await intake.start()
        await intake.export_logs(make_request({"corr": "new-1", "direction": "request", "body": '{"cvv":"739"}'}))
        found = await intake.find("old-1"), await intake.find("new-1")
        await intake.stop()
        return found

    (old_snap,), (new_snap,) = run(go())
    assert old_snap.body == old and old_snap.body_hmac == b""
    key = (tmp_path / "data" / "snapshot-redaction.key").read_bytes().strip()
    assert new_snap.body_hmac == hmac.digest(key, b'{"cvv":"739"}', "sha256")
