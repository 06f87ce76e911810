"""The S3 snapshot backend against a real S3 API (moto_server started here), through boto3."""

import asyncio
import json
import time
import uuid

import boto3
import pytest
from moto_launcher import MotoServer, make_bucket
from snapshot_data import HOUR, SECRETS, T0, Clock, make_request, order_body, sample

from syncwatch.config.models import Config
from syncwatch.metrics.registry import Metrics
from syncwatch.snapshots import SnapshotIntake


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def intake_for(tmp_path, endpoint, backend, clock):
    cfg = Config.model_validate(
        {
            "storage": {"data_dir": str(tmp_path / "data")},
            "snapshots": {"backend": backend, "s3_endpoint_url": endpoint},
        }
    )
    metrics = Metrics()
    return SnapshotIntake(cfg, metrics, clock=clock), metrics


def all_objects(moto, bucket) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents") or []:
            out[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def test_s3_round_trip_redacted_and_swept_at_the_retention_age(moto, tmp_path):
    bucket = make_bucket(moto)
    clock = Clock()
    intake, metrics = intake_for(tmp_path, moto.url, f"s3://{bucket}/syncwatch/prod", clock)

    async def go():
        await intake.start()
        r = await intake.export_logs(
            make_request(
                {"corr": "ord/1 ü", "direction": "request", "body": order_body(), "span_id": b"\x05" * 8},
                {"corr": "ord/1 ü", "direction": "response", "body": '{"ok":true}', "span_id": b"\x05" * 8},
            )
        )
        assert r == (0, "")
        clock.t += HOUR
        await intake.export_logs(make_request({"corr": "ord-2", "direction": "request", "body": "later"}))
        found = await intake.find("ord/1 ü")
        objects = all_objects(moto, bucket)
        stored_bytes = sample(metrics, "syncwatch_snapshot_store_bytes")

        clock.t = T0 + 71 * HOUR + 59 * 60
        await intake.sweep_now()
        kept = await intake.find("ord/1 ü")
        clock.t = T0 + 72 * HOUR + 1
        swept = await intake.sweep_now()
        gone = await intake.find("ord/1 ü")
        remaining = await intake.find("ord-2")
        after = all_objects(moto, bucket)
        await intake.stop()
        return found, objects, stored_bytes, kept, swept, gone, remaining, after

    found, objects, stored_bytes, kept, swept, gone, remaining, after = asyncio.run(go())
    assert [s.direction for s in found] == ["request", "response"]
    assert json.loads(found[0].body)["customer"]["password"].startswith("[REDACTED:password:")
    assert found[0].span_id == b"\x05" * 8 and found[1].body == b'{"ok":true}'
    data_keys = [k for k in objects if "/c/" in k]
    marker_keys = [k for k in objects if "/t/" in k]
    assert len(data_keys) == 3 and len(marker_keys) == 3
    assert all(k.startswith("syncwatch/prod/") for k in objects)
    for secret in SECRETS:
        assert not any(secret.encode() in v for v in objects.values()), secret
    assert stored_bytes == sum(len(objects[k]) for k in data_keys)
    assert len(kept) == 2
    assert swept == 2 and gone == [] and [s.body for s in remaining] == [b"later"]
    assert sorted(k.split("/")[2] for k in after) == ["c", "t"]  # ord-2's snapshot and marker
    assert sample(metrics, "syncwatch_snapshot_oldest_age_seconds") == pytest.approx(71 * HOUR + 1, abs=1)


def test_s3_unreachable_drops_snapshots_with_a_reason_without_hanging(tmp_path):
    server = MotoServer().start()
    bucket = make_bucket(server)
    clock = Clock()
    intake, metrics = intake_for(tmp_path, server.url, f"s3://{bucket}/p", clock)

    async def go():
        await intake.start()
        assert await intake.export_logs(make_request({"corr": "a", "direction": "request", "body": "x"})) == (0, "")
        server.stop()
        started = time.monotonic()
        first = await intake.export_logs(make_request({"corr": "b", "direction": "request", "body": "y"}))
        # Within the failure back-off, further snapshots are dropped at once.
        second = await intake.export_logs(make_request({"corr": "c", "direction": "response", "body": "z"}))
        took = time.monotonic() - started
        await intake.stop()
        return first, second, took

    first, second, took = asyncio.run(go())
    assert first[0] == 1 and "S3 unreachable" in first[1] and second[0] == 1
    assert took < 30
    assert sample(metrics, "syncwatch_dropped_total", reason="snapshot_store_unavailable") == 2
    assert sample(metrics, "syncwatch_snapshots_total", direction="request", result="dropped") == 1
    assert sample(metrics, "syncwatch_snapshots_total", direction="response", result="dropped") == 1
    assert sample(metrics, "syncwatch_snapshot_store_up") == 0


def test_missing_bucket_is_a_store_error_named_in_the_answer(moto, tmp_path):
    intake, metrics = intake_for(tmp_path, moto.url, f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/p", Clock())

    async def go():
        await intake.start()
        out = await intake.export_logs(make_request({"corr": "a", "direction": "request", "body": "x"}))
        await intake.stop()
        return out

    rejected, message = asyncio.run(go())
    assert rejected == 1 and "NoSuchBucket" in message
    assert sample(metrics, "syncwatch_dropped_total", reason="snapshot_store_error") == 1


# -- issue 11, item 9: one key S3 refuses must not take the store down -----------------------------

TOKEN = "s3-keys-token-0123"


def _export(sc, *records) -> tuple[int, int, str]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
    from otlp_raw import post

    status, _, raw = post(sc.otlp_http + "/v1/logs", make_request(*records).SerializeToString())
    resp = ExportLogsServiceResponse()
    resp.ParseFromString(raw)
    return status, resp.partial_success.rejected_log_records, resp.partial_success.error_message


def _snapshot_bodies(sc, corr_path: str) -> list[str]:
    status, raw = sc.get(f"/api/v1/transactions/{corr_path}", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, raw
    return [s["body"] for s in json.loads(raw)["unlinked_snapshots"]]


def test_a_correlation_id_too_long_for_an_s3_key_refuses_that_snapshot_only(moto, make_sidecar):
    """A real sidecar on S3 (moto behind a proxy that enforces S3's 1,024-byte key limit, which
    moto does not): the long non-ASCII ID is refused and counted, the snapshots batched with it
    and those of the next request are stored, and `.`/`..` IDs are key segments of their own."""
    from s3_key_limit import KeyLimitProxy

    proxy = KeyLimitProxy(moto.url).start()
    bucket = make_bucket(moto)
    try:
        sc = make_sidecar(
            {"api": {"token": TOKEN}, "snapshots": {"backend": f"s3://{bucket}/p", "s3_endpoint_url": proxy.url}},
            env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
        )
        long_id = "Bestellung-" + "\u00fc" * 200  # 411 bytes, 1,211 percent-encoded
        first = _export(
            sc,
            *[{"corr": c, "direction": "request", "body": f"body of {c[:12]}"} for c in (long_id, "ord-a", ".", "..")],
        )
        second = _export(sc, {"corr": "ord-b", "direction": "request", "body": "body of ord-b"})
        keys = list(all_objects(moto, bucket))
        assert first[:2] == (200, 1) and "too long for an S3 object key" in first[2]
        assert second[:2] == (200, 0)
        assert sc.metric("syncwatch_dropped_total", reason="snapshot_key_too_long") == 1
        assert sc.metric("syncwatch_snapshots_total", direction="request", result="dropped") == 1
        assert sc.metric("syncwatch_snapshots_total", direction="request", result="stored") == 4
        assert sc.metric("syncwatch_snapshot_store_up") == 1
        assert _snapshot_bodies(sc, "ord-a") == ["body of ord-a"] and _snapshot_bodies(sc, "ord-b") == ["body of ord-b"]
        assert _snapshot_bodies(sc, "%2E") == ["body of ."] and _snapshot_bodies(sc, "%2E%2E") == ["body of .."]
        assert "p/c/%2E/" in "\n".join(keys) and "p/c/%2E%2E/" in "\n".join(keys)
        assert not any("/./" in k or "/../" in k or k.endswith(("/.", "/..")) for k in keys), keys
    finally:
        proxy.stop()


# -- the store interface: both backends keep the same contract ---------------------------------


def _snap(corr: str, received: float, time_: float, body: bytes, direction: str = "request"):
    from syncwatch.snapshots.store import Snapshot

    return Snapshot(
        corr=corr,
        direction=direction,
        received=received,
        time=time_,
        trace_id=bytes(range(16)),
        span_id=b"\x07" * 8,
        flow="orders",
        destination="erp",
        content_type="json",
        size=len(body) + 10,
        sha256=b"\xab" * 32,
        truncated=True,
        redactions=3,
        body=body,
    )


@pytest.mark.parametrize("backend", ["sqlite", "s3"])
def test_both_stores_keep_the_snapshot_store_contract(backend, tmp_path, request):
    """What SnapshotIntake, the sweeper and the API rely on, through SnapshotStore's members
    only: the same answers from the SQLite file and from S3 (moto_server)."""
    from syncwatch.snapshots.s3_store import S3SnapshotStore
    from syncwatch.snapshots.sqlite_store import SqliteSnapshotStore
    from syncwatch.snapshots.store import SnapshotStore

    store: SnapshotStore
    if backend == "s3":
        moto = request.getfixturevalue("moto")
        store = S3SnapshotStore(f"s3://{make_bucket(moto)}/p", endpoint_url=moto.url, train_dictionary=False)
    else:
        store = SqliteSnapshotStore(tmp_path / "snapshots.db", train_dictionary=False)
    assert isinstance(store, SnapshotStore) and store.name == backend

    t = 1_790_000_000.0
    store.open()
    try:
        late = _snap("ord-1", t + 10, t + 2, b'{"n":2}', "response")
        early = _snap("ord-1", t + 10, t + 1, b'{"n":1}')
        old = _snap("ord-0", t, t, b"x" * 5000)
        assert store.put_many([late, early, old]) == []
        assert all(s.stored_bytes > 0 and s.blob for s in (late, early, old))  # compressed by the store

        found = store.find("ord-1")
        assert [(s.time, s.direction, s.body) for s in found] == [
            (t + 1, "request", b'{"n":1}'),
            (t + 2, "response", b'{"n":2}'),
        ]
        got = found[0]
        assert (got.corr, got.received, got.flow, got.destination, got.content_type) == (
            "ord-1",
            t + 10,
            "orders",
            "erp",
            "json",
        )
        assert (got.trace_id, got.span_id, got.size, got.sha256, got.truncated, got.redactions) == (
            bytes(range(16)),
            b"\x07" * 8,
            17,
            b"\xab" * 32,
            True,
            3,
        )
        assert store.find("ord-404") == []
        assert store.find("ord-0")[0].body == b"x" * 5000

        stats = store.stats()
        assert stats.oldest_received == t and stats.bytes > 0 and stats.dictionary_id == 0

        assert store.sweep(t + 5, 100) == 1  # only ord-0 was received before the cutoff
        assert store.find("ord-0") == []
        assert len(store.find("ord-1")) == 2
        assert store.stats().oldest_received == t + 10
        assert store.compact(100) >= 0
        assert store.sweep(t + 11, 1) == 1  # the limit holds
        assert store.sweep(t + 11, 100) == 1
        assert store.find("ord-1") == [] and store.stats().oldest_received is None
    finally:
        store.close()
