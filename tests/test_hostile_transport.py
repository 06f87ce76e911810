"""Hostile OTLP transport against a real sidecar: compression bombs, huge and deeply nested JSON,
unsupported encodings, oversized gRPC messages and slow uploads. Each ends with exact answers,
every refusal counted, and /healthz answering within 1 s while it happens."""

import gzip
import json
import os
import socket
import threading
import time
import urllib.request
import zlib

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from otlp_raw import post, stage_request

PB, JS = "application/x-protobuf", "application/json"
MIB = 1024 * 1024


def _source_spans(n, prefix="h", t0=None):
    t0 = t0 or time.time() - 10
    return stage_request(
        [
            {
                "_start": t0,
                "syncwatch.stage": "source",
                "syncwatch.flow": "orders",
                "syncwatch.source": "storefront",
                "correlation_id": f"{prefix}-{i}",
            }
            for i in range(n)
        ]
    )


class HealthWatch:
    """Polls /healthz from a thread while a test runs; `worst` is the slowest answer in seconds."""

    def __init__(self, sidecar):
        self.url = sidecar.url + "/healthz"
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    r.read()
                    if r.status != 200:
                        self.failures.append(str(r.status))
            except Exception as exc:  # a timeout is a failure of the promise, recorded as such
                self.failures.append(repr(exc))
            self.latencies.append(time.perf_counter() - started)
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def worst(self) -> float:
        return max(self.latencies)


def _peak_rss_mib(sidecar) -> float:
    for line in open(f"/proc/{sidecar.proc.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _rss_mib(sidecar) -> float:
    for line in open(f"/proc/{sidecar.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_concurrent_gzip_bombs_at_the_default_limit_are_bounded_and_healthz_stays_fast(sidecar):
    """16 concurrent small gzip bombs: zeros 1 MiB under the default limit once decompressed (not
    protobuf: 400) and 1 MiB over it (413). Memory stays flat, /healthz fast; a bomb that finds the
    body budget spent is answered 503 + Retry-After. All counted."""
    from syncwatch.config.models import IntakeConfig

    limit = IntakeConfig().max_body_bytes
    under, over = gzip.compress(b"\x00" * (limit - MIB), 9), gzip.compress(b"\x00" * (limit + MIB), 9)
    assert len(under) < 100_000 and len(over) < 100_000
    baseline = _rss_mib(sidecar)
    answers = []
    lock = threading.Lock()

    def send(bomb, kind):
        result = post(sidecar.otlp_http + "/v1/traces", bomb, headers={"Content-Encoding": "gzip"}, timeout=60)
        with lock:
            answers.append((kind, *result))

    with HealthWatch(sidecar) as health:
        senders = [
            threading.Thread(target=send, args=(bomb, kind))
            for _ in range(8)
            for bomb, kind in ((under, "under"), (over, "over"))
        ]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
    assert not health.failures and health.worst < 1.0, (health.worst, health.failures)
    assert len(answers) == 16
    assert {status for kind, status, _, _ in answers if kind == "under"} <= {400, 503}, answers
    assert {status for kind, status, _, _ in answers if kind == "over"} <= {413, 503}, answers
    assert all(headers.get("Retry-After") == "1" for _, status, headers, _ in answers if status == 503)
    statuses = [status for _, status, _, _ in answers]
    for status, reason in ((400, "bad_request"), (413, "too_large"), (503, "body_memory")):
        assert sidecar.metric("syncwatch_otlp_requests_total", signal="traces", code=str(status)) == statuses.count(
            status
        )
        assert sidecar.metric("syncwatch_dropped_total", reason=reason) == statuses.count(status)
    # Memory does not grow with the number of bombs: 16 bodies at the limit are never held at once.
    grown = _peak_rss_mib(sidecar) - baseline
    assert grown < 300, f"peak RSS grew {grown:.0f} MiB"
    # And the receiver still works.
    status, _, _ = post(
        sidecar.otlp_http + "/v1/traces",
        gzip.compress(_source_spans(3).SerializeToString()),
        headers={"Content-Encoding": "gzip"},
    )
    assert status == 200
    assert sidecar.metric("syncwatch_spans_total", result="correlated") == 3


def _otlp_json(n_spans: int) -> bytes:
    """An OTLP/JSON trace export as SDKs write it (hex IDs, attribute lists), n source spans."""
    t0 = int((time.time() - 10) * 1e9)
    filler = [
        {"key": k, "value": {"stringValue": v}}
        for k, v in (
            ("http.request.method", "POST"),
            ("url.full", "https://erp.example/api/orders/submit?tenant=eu-central-1"),
            ("server.address", "erp.example"),
            ("network.protocol.version", "1.1"),
            ("user_agent.original", "order-sync/1.4.2 (python-requests/2.32; linux x86_64)"),
            ("messaging.system", "rabbitmq"),
            ("messaging.destination.name", "orders.outbound.erp"),
        )
    ]
    spans = []
    for i in range(n_spans):
        attrs = [
            {"key": "syncwatch.stage", "value": {"stringValue": "source"}},
            {"key": "syncwatch.flow", "value": {"stringValue": "orders"}},
            {"key": "syncwatch.source", "value": {"stringValue": "storefront"}},
            {"key": "correlation_id", "value": {"stringValue": f"json-{i:07d}"}},
            {"key": "http.response.status_code", "value": {"intValue": "200"}},
        ] + filler
        spans.append(
            {
                "traceId": os.urandom(16).hex(),
                "spanId": os.urandom(8).hex(),
                "name": "order.changed",
                "kind": 1,
                "startTimeUnixNano": str(t0 + i),
                "endTimeUnixNano": str(t0 + i + 1000),
                "attributes": attrs,
                "status": {},
            }
        )
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "order-sync"}}]},
                "scopeSpans": [{"scope": {"name": "syncwatch-instrument"}, "spans": spans}],
            }
        ]
    }
    return json.dumps(doc).encode()


def test_a_27_mb_otlp_json_body_is_parsed_off_the_event_loop(make_sidecar):
    sidecar = make_sidecar({"intake": {"max_body_bytes": 64 * 1024 * 1024}})  # over the 16 MiB default
    n = 27_000
    body = _otlp_json(n)
    assert len(body) > 27_000_000
    with HealthWatch(sidecar) as health:
        status, _, resp = post(sidecar.otlp_http + "/v1/traces", body, JS, timeout=120)
    assert status == 200, resp[:300]
    assert json.loads(resp) == {}  # no partial_success: every span accepted
    assert not health.failures and health.worst < 1.0, (health.worst, health.failures)
    assert sidecar.metric("syncwatch_spans_total", result="correlated") == n


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceSpans":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":'
        + b'{"kvlistValue":{"values":[{"key":"k","value":' * 400
        + b'{"intValue":"1"}'
        + b"}]}}" * 400
        + b"}]}]}]}]}",
    ],
    ids=["nested-array", "top-level-array", "nested-kvlist"],
)
def test_deeply_nested_json_is_400_and_counted(sidecar, body):
    status, _, resp = post(sidecar.otlp_http + "/v1/traces", body, JS)
    assert status == 400, resp[:300]
    assert sidecar.metric("syncwatch_otlp_requests_total", signal="traces", code="400") == 1
    assert sidecar.metric("syncwatch_dropped_total", reason="bad_request") == 1
    status, _, _ = post(sidecar.otlp_http + "/v1/logs", body.replace(b"resourceSpans", b"resourceLogs"), JS)
    assert status == 400
    assert sidecar.metric("syncwatch_dropped_total", reason="bad_request") == 2
    assert sidecar.metric("syncwatch_otlp_requests_total", signal="traces", code="500") == 0


@pytest.mark.parametrize(
    "signal,body",
    [
        ("traces", b"\x0a\x00" * 20_000),  # 20,000 empty resource_spans
        ("traces", b"\x0a\x84\xb8\x02" + b"\x12\x00" * 20_000),  # one resource with 20,000 empty scope_spans
        ("logs", b"\x0a\x00" * 20_000),
    ],
    ids=["empty-resources", "empty-scopes", "empty-log-resources"],
)
def test_a_body_of_empty_containers_is_400_and_counted(sidecar, signal, body):
    """A few bytes each on the wire, a Python object each to walk: refused after a bounded walk."""
    status, _, resp = post(sidecar.otlp_http + f"/v1/{signal}", body)
    assert status == 400 and b"entries beyond" in resp, resp[:300]
    with grpc.insecure_channel(sidecar.otlp_grpc) as channel:
        with pytest.raises(grpc.RpcError) as err:
            _export(channel, body, signal)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sidecar.metric("syncwatch_otlp_requests_total", signal=signal, code="400") == 2
    assert sidecar.metric("syncwatch_dropped_total", reason="bad_request") == 2


@pytest.mark.parametrize("encoding", ["br", "zstd"])
def test_unsupported_content_encodings_are_415_and_counted(sidecar, encoding):
    status, _, resp = post(
        sidecar.otlp_http + "/v1/traces", b"\x1b\x00\x00\x00garbage", headers={"Content-Encoding": encoding}
    )
    assert status == 415, resp
    assert sidecar.metric("syncwatch_otlp_requests_total", signal="traces", code="415") == 1
    assert sidecar.metric("syncwatch_dropped_total", reason="unsupported_media_type") == 1


def test_gzip_and_deflate_bodies_including_chunked_uploads_are_accepted(sidecar):
    raw = _source_spans(4, "enc").SerializeToString()
    deflate_zlib = zlib.compress(raw)
    raw_deflate = zlib.compressobj(wbits=-15)
    deflate_raw = raw_deflate.compress(raw) + raw_deflate.flush()
    two_members = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    for body, encoding in (
        (gzip.compress(raw), "gzip"),
        (deflate_zlib, "deflate"),
        (deflate_raw, "deflate"),
        (two_members, "gzip"),
    ):
        status, _, resp = post(sidecar.otlp_http + "/v1/traces", body, headers={"Content-Encoding": encoding})
        assert status == 200, (encoding, resp)
    # A chunked upload (no Content-Length), as streaming clients send it.
    req = urllib.request.Request(
        sidecar.otlp_http + "/v1/traces", data=iter([raw[:20], raw[20:]]), headers={"Content-Type": PB}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    assert sidecar.metric("syncwatch_otlp_requests_total", signal="traces", code="200") == 5
    # Corrupt and truncated streams are 400, counted.
    for body in (b"\x1f\x8b\x08\x00garbage", gzip.compress(raw)[:-12]):
        status, _, _ = post(sidecar.otlp_http + "/v1/traces", body, headers={"Content-Encoding": "gzip"})
        assert status == 400
    assert sidecar.metric("syncwatch_dropped_total", reason="bad_request") == 2


def test_oversized_bodies_are_413_before_and_after_decompression_and_when_chunked(make_sidecar):
    sc = make_sidecar({"intake": {"max_body_bytes": 64 * 1024}})
    big = b"\x00" * (200 * 1024)
    status, _, _ = post(sc.otlp_http + "/v1/traces", big)  # Content-Length over the limit: not even read
    assert status == 413
    status, _, _ = post(sc.otlp_http + "/v1/traces", gzip.compress(big), headers={"Content-Encoding": "gzip"})
    assert status == 413
    req = urllib.request.Request(
        sc.otlp_http + "/v1/traces", data=iter([big[:100_000], big[100_000:]]), headers={"Content-Type": PB}
    )
    try:
        urllib.request.urlopen(req, timeout=10)
        status = 200
    except urllib.error.HTTPError as e:
        status = e.code
    assert status == 413
    assert sc.metric("syncwatch_otlp_requests_total", signal="traces", code="413") == 3
    assert sc.metric("syncwatch_dropped_total", reason="too_large") == 3


def _export(channel, body: bytes, signal="traces", **kw):
    service = {"traces": "trace.v1.TraceService", "logs": "logs.v1.LogsService"}[signal]
    return channel.unary_unary(f"/opentelemetry.proto.collector.{service}/Export")(body, timeout=10, **kw)


def test_grpc_size_refusals_are_counted(make_sidecar):
    sc = make_sidecar({"intake": {"max_body_bytes": 4096}})
    with grpc.insecure_channel(sc.otlp_grpc) as channel:
        for signal in ("traces", "traces", "logs"):
            with pytest.raises(grpc.RpcError) as err:
                _export(channel, b"\x0a" + b"\x00" * 10_000, signal)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Compressed on the wire, too large once decompressed.
        with pytest.raises(grpc.RpcError) as err:
            _export(channel, b"\x00" * 1_000_000, compression=grpc.Compression.Gzip)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _export(channel, _source_spans(2, "g").SerializeToString()) == b""
    sc.wait_for("syncwatch_otlp_requests_total", 3, signal="traces", code="413")
    assert sc.metric("syncwatch_otlp_requests_total", signal="logs", code="413") == 1
    assert sc.metric("syncwatch_dropped_total", reason="too_large") == 4
    assert sc.metric("syncwatch_otlp_requests_total", signal="traces", code="200") == 1


def test_a_grpc_call_without_a_message_is_invalid_argument(sidecar):
    with grpc.insecure_channel(sidecar.otlp_grpc) as channel:
        call = channel.stream_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.RpcError) as err:
            call(iter([]), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Counted just after the answer (the handler learns which case it was from answering).
    sidecar.wait_for("syncwatch_otlp_requests_total", 1, signal="traces", code="400")
    assert sidecar.metric("syncwatch_dropped_total", reason="bad_request") == 1


def _padded_request(size: int, prefix: str) -> bytes:
    """A valid trace export of exactly `size` bytes: one source span with a filler attribute."""
    req = _source_spans(1, prefix)
    base = len(req.SerializeToString())
    span = req.resource_spans[0].scope_spans[0].spans[0]
    kv = span.attributes.add()
    kv.key = "filler"
    kv.value.string_value = "x" * (size - base - 12)
    while len(req.SerializeToString()) < size:
        kv.value.string_value += "x"
    while len(req.SerializeToString()) > size:
        kv.value.string_value = kv.value.string_value[:-1]
    body = req.SerializeToString()
    assert len(body) == size
    return body


class SlowUpload:
    """An OTLP/HTTP upload that sends its headers and all but the last KiB of its body, then waits."""

    def __init__(self, sidecar, body: bytes):
        self.body = body
        self.sock = socket.create_connection(("127.0.0.1", sidecar.otlp_http_port), timeout=30)
        head = (
            f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PB}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.sock.sendall(head + body[:-1024])

    def finish(self) -> int:
        self.sock.sendall(self.body[-1024:])
        answer = b""
        while chunk := self.sock.recv(65536):
            answer += chunk
        self.sock.close()
        return int(answer.split(b" ", 2)[1])


def test_in_flight_body_bytes_are_capped_and_small_exports_still_pass(make_sidecar):
    """max_body_bytes 1 MiB: at most 2 MiB of large bodies in flight. Two slow 1 MiB uploads hold
    most of it; a third large body is refused with 503 + Retry-After (HTTP) or UNAVAILABLE (gRPC),
    counted; ordinary small exports are not affected; once the uploads finish, all is accepted."""
    sc = make_sidecar({"intake": {"max_body_bytes": MIB}})
    uploads = [SlowUpload(sc, _padded_request(MIB, f"slow{i}")) for i in range(2)]
    time.sleep(0.5)  # the receiver has read what was sent
    big = _padded_request(MIB, "third")
    status, headers, _ = post(sc.otlp_http + "/v1/traces", big)
    assert status == 503 and headers["Retry-After"] == "1"
    with grpc.insecure_channel(sc.otlp_grpc, options=[("grpc.max_send_message_length", 4 * MIB)]) as channel:
        with pytest.raises(grpc.RpcError) as err:
            _export(channel, big)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ("retry-after", "1") in (err.value.trailing_metadata() or ())
        assert _export(channel, _source_spans(2, "small-grpc").SerializeToString()) == b""
    status, _, _ = post(sc.otlp_http + "/v1/traces", _source_spans(2, "small-http").SerializeToString())
    assert status == 200
    assert sc.metric("syncwatch_dropped_total", reason="body_memory") == 2
    assert sc.metric("syncwatch_otlp_requests_total", signal="traces", code="503") == 2
    assert [u.finish() for u in uploads] == [200, 200]
    status, _, resp = post(sc.otlp_http + "/v1/traces", big)
    assert status == 200
    assert ExportTraceServiceResponse.FromString(resp).partial_success.rejected_spans == 0
    assert sc.metric("syncwatch_spans_total", result="correlated") == 7


def test_concurrent_large_compressed_exports_all_get_through_with_retries(make_sidecar):
    """Bodies charge the budget as they inflate, so concurrent large ones could each hold a part
    and none finish; the oldest may always take more, so exporters that retry on 503 all succeed."""
    sc = make_sidecar({"intake": {"max_body_bytes": 4 * MIB}})
    bodies = [gzip.compress(_padded_request(3 * MIB + MIB // 2, f"big{i}")) for i in range(8)]
    refused, answers = [], []
    lock = threading.Lock()

    def export(body):
        for _ in range(200):
            status, headers, _ = post(
                sc.otlp_http + "/v1/traces", body, headers={"Content-Encoding": "gzip"}, timeout=60
            )
            if status != 503:
                break
            with lock:
                refused.append(headers.get("Retry-After"))
            time.sleep(0.02)
        with lock:
            answers.append(status)

    senders = [threading.Thread(target=export, args=(b,)) for b in bodies]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    assert answers == [200] * 8
    assert set(refused) <= {"1"}
    assert sc.metric("syncwatch_dropped_total", reason="body_memory") == len(refused)
    assert sc.metric("syncwatch_spans_total", result="correlated") == 8


def test_the_request_holding_budget_longest_may_always_take_more():
    """Without this, two large bodies inflating side by side can each hold half the budget and
    both be refused, again on every retry."""
    from syncwatch.intake.body import FREE_PER_REQUEST, BodyBudget
    from syncwatch.intake.decode import OtlpError

    budget = BodyBudget(4 * MIB)
    first, second = budget.lease(), budget.lease()
    first.take(FREE_PER_REQUEST + 2 * MIB)
    second.take(FREE_PER_REQUEST + 2 * MIB)
    with pytest.raises(OtlpError) as err:
        second.take(MIB)
    assert (err.value.status, err.value.reason) == (503, "body_memory")
    first.take(MIB)  # the oldest holder goes over the limit, and so finishes
    assert budget.used == 5 * MIB and not second.would_fit(MIB) and first.would_fit(MIB)
    first.release()
    second.take(MIB)  # now the oldest
    second.take(3 * MIB)
    second.release()
    assert budget.used == 0


def test_metrics_negotiate_openmetrics(sidecar):
    status, body = sidecar.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and body.endswith(b"# EOF\n")
    req = urllib.request.Request(sidecar.url + "/metrics", headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    with urllib.request.urlopen(sidecar.url + "/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        assert not r.read().endswith(b"# EOF\n")


def test_a_stalled_upload_is_408_and_frees_its_share(monkeypatch):
    """In-process, with the idle timeout cut from 30 s to 0.3 s: an upload that stops sending is
    answered 408, counted, and what it held goes back to the budget."""
    import asyncio

    from aiohttp import web

    from syncwatch.intake import http as otlp_http
    from syncwatch.intake.body import BodyDecoder
    from syncwatch.intake.service import OtlpService
    from syncwatch.metrics.registry import Metrics

    monkeypatch.setattr(otlp_http, "BODY_IDLE_TIMEOUT", 0.3)
    metrics = Metrics()
    bodies = BodyDecoder(MIB)

    async def go():
        runner = web.AppRunner(otlp_http.build_app(OtlpService(None, metrics), bodies), **otlp_http.RUNNER_OPTIONS)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PB}\r\nContent-Length: {MIB}\r\n\r\n".encode()
            + b"\x00" * (600 * 1024)
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        held = bodies.budget.used
        answer = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        await writer.wait_closed()
        await runner.cleanup()
        return held, answer

    held, answer = asyncio.run(go())
    bodies.close()
    assert held > 0 and answer.startswith(b"HTTP/1.1 408")
    assert bodies.budget.used == 0
    assert metrics.registry.get_sample_value("syncwatch_otlp_requests_total", {"signal": "traces", "code": "408"}) == 1
    assert metrics.registry.get_sample_value("syncwatch_dropped_total", {"reason": "bad_request"}) == 1
