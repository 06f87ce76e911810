"""Hostile OTLP bodies against a real sidecar (default config, 64 MiB body limit): prints, per
scenario on a fresh sidecar, the answers, the wall time, the slowest /healthz answer meanwhile
and how much the sidecar's peak RSS grew; then small-request throughput (the hot path).

1. 16 concurrent gzip bombs of ~64 KB: 8 inflate to 63 MiB of zeros, 8 to 65 MiB;
2. one 27 MB OTLP/JSON trace export (27,000 spans);
3. 8 concurrent gzip bombs inflating to 62 MiB of empty resource_spans entries (valid protobuf);
4. small protobuf exports (50 spans, ~6 KB) over OTLP/HTTP and OTLP/gRPC, 8 at a time.

Usage: .venv/bin/python bench/otlp_bodies.py
"""

from __future__ import annotations

import asyncio
import gzip
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "support")]

import aiohttp
import grpc
from otlp_raw import post, stage_request
from sidecar import Sidecar
from test_hostile_transport import MIB, HealthWatch, _otlp_json, _peak_rss_mib, _rss_mib


def concurrent(
    sc: Sidecar, bodies: list[bytes], content_type: str = "application/x-protobuf", headers: dict | None = None
) -> None:
    answers: list[int] = []
    lock = threading.Lock()

    def send(body):
        status = post(sc.otlp_http + "/v1/traces", body, content_type, headers=headers, timeout=300)[0]
        with lock:
            answers.append(status)

    baseline = _rss_mib(sc)
    started = time.perf_counter()
    with HealthWatch(sc) as health:
        threads = [threading.Thread(target=send, args=(b,)) for b in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    counts = {s: answers.count(s) for s in sorted(set(answers))}
    print(
        f"  answers {counts}, {time.perf_counter() - started:.2f} s, slowest /healthz {health.worst * 1000:.0f} ms, "
        f"peak RSS +{_peak_rss_mib(sc) - baseline:.0f} MiB"
    )


def small_throughput(sc: Sidecar, n: int = 3000, workers: int = 8) -> tuple[float, float]:
    t0 = time.time() - 10
    bodies = [
        stage_request(
            [{"_start": t0, "http.request.method": "POST", "server.address": "erp"} for _ in range(50)]
        ).SerializeToString()
        for _ in range(20)
    ]

    async def http() -> float:
        async with aiohttp.ClientSession() as session:
            todo = list(range(n))

            async def worker():
                while todo:
                    i = todo.pop()
                    async with session.post(
                        sc.otlp_http + "/v1/traces",
                        data=bodies[i % 20],
                        headers={"Content-Type": "application/x-protobuf"},
                    ) as r:
                        assert r.status == 200
                        await r.read()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(workers)))
            return n / (time.perf_counter() - started)

    async def grpc_() -> float:
        async with grpc.aio.insecure_channel(sc.otlp_grpc) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            todo = list(range(n))

            async def worker():
                while todo:
                    await export(bodies[todo.pop() % 20], timeout=10)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(workers)))
            return n / (time.perf_counter() - started)

    asyncio.run(http())  # warm up
    return asyncio.run(http()), asyncio.run(grpc_())


def main() -> None:
    scenarios = [
        (
            "16 gzip bombs (8 x 63 MiB, 8 x 65 MiB of zeros)",
            lambda: (
                [gzip.compress(b"\x00" * (63 * MIB), 9)] * 8 + [gzip.compress(b"\x00" * (65 * MIB), 9)] * 8,
                "application/x-protobuf",
                {"Content-Encoding": "gzip"},
            ),
        ),
        ("one 27 MB OTLP/JSON export", lambda: ([_otlp_json(27_000)], "application/json", None)),
        (
            "8 gzip bombs of 62 MiB of empty resource_spans (valid protobuf)",
            lambda: (
                [gzip.compress(b"\x0a\x00" * (31 * MIB), 9)] * 8,
                "application/x-protobuf",
                {"Content-Encoding": "gzip"},
            ),
        ),
    ]
    for name, make in scenarios:
        bodies, content_type, headers = make()
        with tempfile.TemporaryDirectory() as tmp:
            sc = Sidecar(Path(tmp)).start()
            try:
                print(name)
                concurrent(sc, bodies, content_type, headers)
            finally:
                sc.stop()
    with tempfile.TemporaryDirectory() as tmp:
        sc = Sidecar(Path(tmp)).start()
        try:
            http, grpc_rate = small_throughput(sc)
            print(f"small exports (50 spans): OTLP/HTTP {http:.0f} req/s, OTLP/gRPC {grpc_rate:.0f} req/s")
        finally:
            sc.stop()


if __name__ == "__main__":
    main()
