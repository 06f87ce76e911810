"""The query API against hostile data: payloads shown as stored, out-of-range times in the ledger,
forged cursors, odd Authorization headers and correlation IDs that would forge log lines.

Payload tests run a real sidecar (snapshots sent over OTLP/HTTP); ledger rows that older versions
wrote (times out of range) go into a ledger file served by the real API on an aiohttp server.
"""

import asyncio
import base64
import json
import math
import socket
import time
import urllib.parse

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from api_data import write_ledger
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from otlp_raw import post
from pg_support import reset, scratch_database, storage_config
from snapshot_data import make_request

from syncwatch.api.routes import setup_api
from syncwatch.cli.transactions import render_list, render_timeline
from syncwatch.config.models import Config
from syncwatch.ledger.schema import STAGE_CONFIRM, corr_hash

TOKEN = "hostile-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TRACE = "cd" * 16
YEAR_1 = -62135596800.0  # 0001-01-01T00:00:00Z
NOW = 1_800_000_000.0


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _get_json(sc, path):
    status, body = sc.get(path, headers=AUTH)
    return status, _strict_json(body) if body else None


@pytest.fixture
def api_sidecar(make_sidecar):
    return make_sidecar({"api": {"token": TOKEN}})


def _send_snapshots(sc, *records):
    status, _, resp = post(sc.otlp_http + "/v1/logs", make_request(*records).SerializeToString())
    assert status == 200, resp


def test_payload_bodies_are_shown_as_stored(api_sidecar):
    sc = api_sidecar
    deep = json.dumps([[[[0]]]])
    for _ in range(150):  # 600 levels
        deep = "[[[[" + deep + "]]]]"
    bodies = {
        "big": {"start": 1e300, "status": "ok"},
        "negative": {"deadline": -1e14, "time": 12},
        "plain": {
            "start": 1800000000,
            "end": 1800000001.5,
            "changed_at": "2027-01-01",
            "received": [1, 2],
            "nested": {"closed_at": 1800000000},
        },
        "deep": json.loads(deep),
    }
    sent_at = time.time() - 5
    _send_snapshots(
        sc,
        *(
            {"corr": f"pay-{name}", "direction": "request", "body": json.dumps(body), "time": sent_at}
            for name, body in bodies.items()
        ),
    )
    # What strict JSON cannot carry is shown as the stored text.
    texts = {"nan": '{"start": NaN}', "huge": '{"start": 1e400}'}
    _send_snapshots(
        sc, *({"corr": f"pay-{name}", "direction": "request", "body": text} for name, text in texts.items())
    )
    for name, text in texts.items():
        status, record = _get_json(sc, f"/api/v1/transactions/pay-{name}")
        assert status == 200, (name, record)
        (snap,) = record["unlinked_snapshots"]
        assert snap["body"] == text and snap["body_encoding"] == "text", snap
    for name, body in bodies.items():
        status, record = _get_json(sc, f"/api/v1/transactions/pay-{name}")
        assert status == 200, (name, record)
        (snap,) = record["unlinked_snapshots"]
        assert snap["body_encoding"] == "json" and snap["body"] == body, name
        # syncwatch's own time fields are still ISO strings.
        assert snap["time"].endswith("Z") and snap["time"][:4] == time.strftime("%Y", time.gmtime(sent_at))
        assert snap["received"].endswith("Z")
    assert sc.metric("syncwatch_otlp_requests_total", signal="logs", code="200") == 2


def test_a_correlation_id_cannot_forge_a_log_line(api_sidecar):
    sc = api_sidecar
    corr = "ord-7\n2026-01-01 00:00:00,000 INFO syncwatch.api: forged line"
    status, _, resp = post(
        sc.otlp_http + "/v1/logs",
        make_request({"corr": corr, "direction": "request", "body": "hello"}).SerializeToString(),
    )
    answer = ExportLogsServiceResponse.FromString(resp)
    assert status == 200 and answer.partial_success.rejected_log_records == 1  # refused, as on spans
    assert answer.partial_success.error_message == "1 x correlation ID contains control characters"
    status, _ = _get_json(sc, "/api/v1/transactions/" + urllib.parse.quote(corr, safe=""))
    assert status == 404
    sc.stop()
    assert not any(
        line.startswith("2026-01-01 00:00:00,000 INFO syncwatch.api: forged") for line in sc.log().splitlines()
    )


def _raw_get(port: int, path: str, auth: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"GET "
            + path.encode()
            + b" HTTP/1.1\r\nHost: x\r\nAuthorization: "
            + auth
            + b"\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "auth",
    [
        b"Bearer \xff\xfe",
        b"Bearer " + TOKEN.encode() + b"\xc3",
        "Bearer tökén".encode(),
        b"\xff\xfe " + TOKEN.encode(),
        b"Bearer",
    ],
)
def test_a_non_ascii_or_malformed_authorization_header_is_401(api_sidecar, auth):
    sc = api_sidecar
    for path in ("/api/v1/transactions/ord-1", "/api/v1/transactions?state=pending"):
        assert _raw_get(sc.http_port, path, auth) == 401
    assert _raw_get(sc.http_port, "/api/v1/transactions?state=pending", b"Bearer " + TOKEN.encode()) == 200


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    [
        '[[1], "a", "b", "c"]',
        '[{"x": 1}, "a", "b", "c"]',
        '[18446744073709551616, "a", "b", "c"]',
        "[1, 2, 3, 4]",
        '[true, "a", "b", "c"]',
        '[1.5, "a", null, "c"]',
        '[1.5, "a", "b", ["c"]]',
        "[" * 3000 + "]" * 3000,
        '"a string"',
        "12",
        '{"a": 1}',
        "[1, 2]",
    ],
)
def test_forged_cursors_are_400(api_sidecar, raw):
    sc = api_sidecar
    for state in ("pending", "failed", "duplicate"):
        status, body = _get_json(sc, f"/api/v1/transactions?state={state}&cursor={_cursor(raw)}")
        assert status == 400 and "cursor" in body["error"], (state, body)


# ---- times out of range, as older versions accepted them into the ledger (either backend) ---------


def _rows() -> list[tuple[str, dict]]:
    timeline = {
        "attempts": [
            [TRACE, "01" * 8, 1e300, 1e300, 1, "503", "http_503"],
            [TRACE, "02" * 8, YEAR_1, -1e11, 2, "201", None],
            [TRACE, "03" * 8, None, "x", None, None, None],
            [TRACE, "06" * 8, float("nan"), 5.0, float("nan"), "500", None],
        ]
    }
    out: list[tuple[str, dict]] = []
    for corr, changed, opened, deadline in (  # corr, changed_at, opened_at, deadline
        ("far-past", -1e11, YEAR_1, -1e14),
        ("year-1", YEAR_1, YEAR_1, YEAR_1 + 300),
        ("far-future", 1e300, NOW, 1e300),
        ("infinite", float("-inf"), NOW, float("inf")),
    ):
        out.append(
            (
                "open_tx",
                dict(
                    corr=corr,
                    dest="erp",
                    flow="orders",
                    source="storefront",
                    changed_at=changed,
                    opened_at=opened,
                    deadline=deadline,
                    attempts=3,
                    timeline=json.dumps(timeline),
                ),
            )
        )
    closed = {
        "attempts": timeline["attempts"],
        "close": [STAGE_CONFIRM, TRACE, "04" * 8, -1e11, YEAR_1, None, "k-1"],
        "duplicates": [[TRACE, "05" * 8, 1e300, float("inf"), "k-1"]],
    }
    for corr, outcome, changed, closed_at, lag in (
        ("exp-past", "expired", -1e11, YEAR_1, None),
        ("fail-future", "failed", 1e300, 1e300, None),
        ("conf-odd", "confirmed", YEAR_1, -1e11, float("inf")),
    ):
        out.append(
            (
                "closed_tx",
                dict(
                    corr=corr,
                    dest="erp",
                    flow="orders",
                    source="storefront",
                    outcome=outcome,
                    changed_at=changed,
                    opened_at=YEAR_1,
                    deadline=-1e14,
                    closed_at=closed_at,
                    lag=lag,
                    attempts=3,
                    timeline=json.dumps(closed),
                    corr_hash=corr_hash(corr),
                ),
            )
        )
    out.append(
        (
            "applies",
            dict(idem="k-1", corr="conf-odd", dest="erp", flow="orders", first_at=-1e11, last_at=1e300, applies=2),
        )
    )
    return out


@pytest.fixture(scope="module")
def pg_ledger_db():
    with scratch_database("syncwatch_hostile") as name:
        yield name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.databases)])
def hostile_config(request, tmp_path) -> Config:
    """These rows in the ledger of either backend (PostgreSQL's double precision holds them all)."""
    storage = {"data_dir": str(tmp_path / "data")}
    if request.param == "postgresql":
        db = request.getfixturevalue("pg_ledger_db")
        reset(db)
        storage.update(storage_config(db, tmp_path))
    config = Config.model_validate({"storage": storage, "api": {"token": TOKEN}})
    write_ledger(config, _rows())
    return config


def _serve_api(config, scenario):
    async def go():
        app = web.Application()
        setup_api(app, config=config, snapshots=None, clock=lambda: NOW)
        async with TestClient(TestServer(app)) as client:
            return await scenario(client)

    return asyncio.run(go())


def test_out_of_range_times_in_the_ledger_render(hostile_config):
    async def scenario(client):
        out = {}
        for path in [
            "/api/v1/transactions/" + c
            for c in ("far-past", "year-1", "far-future", "infinite", "exp-past", "fail-future", "conf-odd")
        ] + [f"/api/v1/transactions?state={s}" for s in ("pending", "overdue", "expired", "failed", "duplicate")]:
            r = await client.get(path, headers=AUTH)
            out[path] = (r.status, _strict_json(await r.text()))  # valid JSON: no NaN or Infinity
        return out

    out = _serve_api(hostile_config, scenario)
    assert {path: status for path, (status, _) in out.items() if status != 200} == {}
    (far_past,) = out["/api/v1/transactions/far-past"][1]["destinations"]
    assert far_past["changed_at"] is None and far_past["changed_at_raw"] == -1e11
    assert far_past["deadline"] is None and far_past["deadline_raw"] == -1e14
    assert far_past["opened_at"] == "0001-01-01T00:00:00.000Z" and "opened_at_raw" not in far_past
    assert far_past["state"] == "overdue"
    big, year1, odd = (next(a for a in far_past["attempts"] if a["span_id"] == n * 8) for n in ("01", "02", "03"))
    assert big["start"] is None and big["start_raw"] == 1e300
    assert year1["start"] == "0001-01-01T00:00:00.000Z" and year1["end"] is None and year1["end_raw"] == -1e11
    assert odd["start"] is None and odd["end"] == "x"  # not a number: shown as found
    (year_1,) = out["/api/v1/transactions/year-1"][1]["destinations"]
    assert year_1["changed_at"] == "0001-01-01T00:00:00.000Z" and year_1["deadline"] == "0001-01-01T00:05:00.000Z"
    (inf,) = out["/api/v1/transactions/infinite"][1]["destinations"]
    assert inf["changed_at"] is None and inf["changed_at_raw"] == "-Infinity" and inf["deadline_raw"] == "Infinity"
    (conf,) = out["/api/v1/transactions/conf-odd"][1]["destinations"]
    assert conf["lag_seconds"] is None and conf["closed_at_raw"] == -1e11
    assert [c["duplicate"] for c in conf["confirmations"]] == [False, True]
    assert conf["confirmations"][1]["end_raw"] == "Infinity"
    pending = out["/api/v1/transactions?state=pending"][1]["items"]
    assert sorted(i["correlation_id"] for i in pending) == ["far-future", "far-past", "infinite", "year-1"]
    past = next(i for i in pending if i["correlation_id"] == "far-past")
    assert past["deadline"] is None and past["deadline_raw"] == -1e14 and past["overdue_seconds"] == NOW + 1e14
    assert past["last_code"] in ("503", "201", "500")
    assert [i["correlation_id"] for i in out["/api/v1/transactions?state=expired"][1]["items"]] == ["exp-past"]
    assert out["/api/v1/transactions?state=expired"][1]["items"][0]["closed_at"] == "0001-01-01T00:00:00.000Z"
    (failed,) = out["/api/v1/transactions?state=failed"][1]["items"]
    assert failed["closed_at"] is None and failed["closed_at_raw"] == 1e300
    (dup,) = out["/api/v1/transactions?state=duplicate"][1]["items"]
    assert dup["first_at_raw"] == -1e11 and dup["last_at_raw"] == 1e300
    # `syncwatch transactions` shows them too.
    shown = render_timeline(out["/api/v1/transactions/far-past"][1])
    assert "(out of range: -100000000000.0)  source changed" in shown and "(out of range: 1e+300)  attempt 1" in shown
    assert "(out of range: -100000000000000.0)" in render_list("pending", pending)


def test_pages_over_out_of_range_times_walk_every_row_once(hostile_config):
    async def scenario(client):
        seen, cursor = [], None
        while True:
            q = "state=pending&limit=1" + (f"&cursor={cursor}" if cursor else "")
            r = await client.get(f"/api/v1/transactions?{q}", headers=AUTH)
            assert r.status == 200, await r.text()
            body = await r.json()
            seen += [i["correlation_id"] for i in body["items"]]
            cursor = body["next_cursor"]
            if not cursor:
                return seen

    seen = _serve_api(hostile_config, scenario)
    assert seen == ["far-past", "year-1", "far-future", "infinite"]
    assert not math.isnan(NOW)
