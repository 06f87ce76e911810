"""Hostile-load benchmark (issue 11): what many attempts on one transaction cost the ledger writer.

1. In-process (syncwatch.ledger.transitions.Ledger, as the tests build it): the cost of one more request
   carrying one attempt, with 1, 1,000, 10,000 and 20,000 attempts already recorded on the same
   transaction, side by side. After the fix it is flat.
2. Through a real `syncwatch run`: one OTLP/HTTP request carrying ~5 MB of attempts of one
   transaction; how long it takes, and how long a small request and /healthz wait meanwhile.

Usage: .venv/bin/python bench/hostile.py [--attempts 1,1000,10000,20000] [--requests 30] [--big-mb 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "support")]

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_raw import add_attributes, post
from sidecar import Sidecar

from syncwatch.config.models import Config
from syncwatch.intake.extract import SpanExtractor
from syncwatch.intake.trace_view import TraceView
from syncwatch.ledger.transitions import Ledger
from syncwatch.metrics.registry import Metrics

CORR = "order-hostile-1"
FLOWS = {"orders": {"destinations": ["erp"], "deadline": "1h"}}


def attempts_request(first: int, n: int, t0: float, source: bool = False, corr: str = CORR) -> bytes:
    """n attempt spans (resend counts first .. first+n-1) of one transaction, plus its source span."""
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    common = {"syncwatch.flow": "orders", "syncwatch.correlation_id": corr, "syncwatch.source": "storefront"}
    if source:
        span = spans.add()
        span.trace_id, span.span_id, span.name = os.urandom(16), os.urandom(8), "source"
        span.start_time_unix_nano = span.end_time_unix_nano = int(t0 * 1e9)
        add_attributes(span, {**common, "syncwatch.stage": "source"})
    for i in range(first, first + n):
        span = spans.add()
        span.trace_id, span.span_id, span.name = os.urandom(16), os.urandom(8), "attempt"
        start = t0 + i * 0.01
        span.start_time_unix_nano = int(start * 1e9)
        span.end_time_unix_nano = int((start + 0.005) * 1e9)
        add_attributes(
            span,
            {
                **common,
                "syncwatch.stage": "attempt",
                "syncwatch.destination": "erp",
                "http.request.resend_count": i,
                "http.response.status_code": 503,
            },
        )
    return req.SerializeToString()


def per_request_cost(already: int, requests: int, tmp: Path) -> tuple[float, float, float]:
    """(median ms, 90th percentile ms, seconds to build the history) of extract + record of a
    one-attempt request, with `already` attempts recorded on the same transaction."""
    config = Config.model_validate({"storage": {"data_dir": str(tmp / f"ledger-{already}")}, "flows": FLOWS})
    ledger = Ledger(config, Metrics())
    extractor = SpanExtractor(config.correlation.keys)
    t0 = time.time() - 86400

    def record(body: bytes) -> None:
        ledger.record(extractor.extract(TraceView.FromString(body), time.time()).events)

    built = time.perf_counter()
    record(attempts_request(0, min(already, 1000), t0, source=True))
    for first in range(1000, already, 1000):
        record(attempts_request(first, min(1000, already - first), t0))
    built = time.perf_counter() - built
    bodies = [attempts_request(already + i, 1, t0) for i in range(requests)]
    times = []
    for body in bodies:
        started = time.perf_counter()
        record(body)
        times.append((time.perf_counter() - started) * 1000)
    ledger.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1], built


def big_request(megabytes: float, tmp: Path) -> dict:
    """One request of ~`megabytes` MB of attempts through a real sidecar, a small request and
    /healthz polled meanwhile."""
    t0 = time.time() - 86400
    per_span = len(attempts_request(0, 100, t0)) / 100
    n = int(megabytes * 1e6 / per_span)
    body = attempts_request(0, n, t0, source=True)
    sc = Sidecar(tmp / "sidecar", {"flows": FLOWS}).start()
    worst = {"small_request_s": 0.0, "healthz_s": 0.0}
    stop = threading.Event()

    def probe(kind: str) -> None:
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            if kind == "healthz_s":
                urllib.request.urlopen(sc.url + "/healthz", timeout=120).read()
            else:
                post(sc.otlp_http + "/v1/traces", attempts_request(0, 1, t0, corr=f"order-small-{i}"), timeout=120)
            worst[kind] = max(worst[kind], time.perf_counter() - started)
            i += 1
            stop.wait(0.1)

    try:
        threads = [threading.Thread(target=probe, args=(k,), daemon=True) for k in worst]
        for t in threads:
            t.start()
        time.sleep(0.5)
        started = time.perf_counter()
        status, _, _ = post(sc.otlp_http + "/v1/traces", body, timeout=600)
        took = time.perf_counter() - started
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(timeout=120)
    finally:
        sc.stop()
    return {"bytes": len(body), "attempts": n, "status": status, "seconds": took, **worst}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attempts", default="1,1000,10000,20000", help="attempts already recorded, comma-separated")
    parser.add_argument("--requests", type=int, default=30, help="one-attempt requests timed at each size")
    parser.add_argument("--big-mb", type=float, default=5.0, help="size of the one big request (0: skip)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.attempts.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = [(k, *per_request_cost(k, args.requests, tmp)) for k in sizes]
        big = big_request(args.big_mb, tmp) if args.big_mb > 0 else None
    print(
        f"one more attempt on one transaction, in-process (extract + record, one SQLite commit each; "
        f"{args.requests} requests per size):"
    )
    print(f"  {'attempts already':>17} {'median ms':>10} {'p90 ms':>8} {'x of first':>10}   (history built in)")
    for k, median, p90, built in rows:
        print(f"  {k:>17,} {median:>10.2f} {p90:>8.2f} {median / rows[0][1]:>10.1f}   ({built:.1f} s)")
    if big is not None:
        print(
            f"one request of {big['bytes'] / 1e6:.1f} MB ({big['attempts']:,} attempts of one transaction) through "
            f"`syncwatch run`: answered {big['status']} in {big['seconds']:.2f} s; meanwhile a one-span request "
            f"waited up to {big['small_request_s']:.2f} s and /healthz up to {big['healthz_s']:.2f} s"
        )


if __name__ == "__main__":
    main()
