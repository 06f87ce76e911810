"""Payload snapshot throughput, size and intake latency during a retention sweep.

    .venv/bin/python bench/snapshots.py                 # full run (1,000,000-row sweep)
    .venv/bin/python bench/snapshots.py --sweep-rows 100000 --count 10000   # quicker
    .venv/bin/python bench/snapshots.py --only worst    # just 4.

Prints:
  1. snapshots/s stored: 4 KiB JSON order payloads (card, CVV, e-mail, bearer token in each),
     through SnapshotIntake.export_logs in requests of 100 records (as the OTel SDK's batch log
     processor sends them): redaction, SHA-256, zstd, SQLite commit. One process, one core busy.
  2. stored bytes as a share of raw bytes (SQLite pages in use / payload bytes received).
  3. intake latency (p50/p99/max per export_logs of 10 snapshots, every 10 ms) while the sweeper
     deletes N expired snapshots.
  4. redaction time of 4 KiB worst-case payloads, each the densest input for one rule (digit
     groups for card numbers, IBAN-shaped groups, @s, pairs, quotes, XML tags, brackets, in text
     and inside a JSON string), median and p99 of --worst-rounds runs each; and a 16 MiB body,
     of which only max_bytes + 64 KiB is redacted.
Targets (issue 4): >= 5,000 snapshots/s; <= 25 % of raw size; intake p99 < 50 ms during the sweep.
Target (issue 11): every 4 KiB worst case redacted in under 10 ms.
  5. (--only audit) 1. again with the payload audits on: a 20-field ownership map on the orders
     flow, writers alternating storefront/erp; the tracker's bytes per tracked field in memory
     (tracemalloc over 200,000 fields) and on disk (SQLite pages of audit.db's `tracked` table
     after the run, per field it holds). Target (issue 15): still >= 5,000 snapshots/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import string
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from syncwatch.config.models import Config
from syncwatch.metrics.registry import Metrics
from syncwatch.snapshots import SnapshotIntake
from syncwatch.snapshots.store import Snapshot

HOUR = 3600.0
rnd = random.Random(4)
FIRST = ["Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Greta", "Hugo", "Ines", "Jonas"]
LAST = ["Schmidt", "Müller", "Smith", "Garcia", "Rossi", "Dubois", "Nowak", "Jensen"]
CITIES = ["Berlin", "Hamburg", "Munich", "Vienna", "Zurich", "Paris", "Lyon", "Madrid"]
PRODUCTS = ["Cotton T-Shirt", "Running Shoe", "Wool Sweater", "Denim Jacket", "Leather Belt", "Rain Coat"]


def luhn_card() -> str:
    digits = [4] + [rnd.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        x = d * 2 if i % 2 == 0 else d
        total += x - 9 if x > 9 else x
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def line(n: int) -> dict:
    return {
        "line_no": n,
        "sku": f"SKU-{rnd.randrange(10**6):06d}",
        "name": f"{rnd.choice(PRODUCTS)} {rnd.choice(['Black', 'Navy', 'Red', 'White'])} {rnd.choice('SMLX')}",
        "quantity": rnd.randint(1, 5),
        "unit_price": {"amount": f"{rnd.uniform(5, 200):.2f}", "currency": "EUR"},
        "tax_rate": "0.19",
        "warehouse": rnd.choice(["WH-BER-01", "WH-HAM-02"]),
        "discounts": [],
    }


def order_payload(i: int) -> str:
    """A storefront order as sent to the ERP, compact JSON of about 4 KiB."""
    first, last = rnd.choice(FIRST), rnd.choice(LAST)
    order = {
        "order_id": f"SO-{i:010d}",
        "external_id": "".join(rnd.choices(string.hexdigits.lower(), k=32)),
        "created_at": f"2026-11-27T12:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}.{rnd.randrange(1000):03d}Z",
        "channel": "web",
        "status": "confirmed",
        "currency": "EUR",
        "customer": {
            "id": f"C-{rnd.randrange(10**7)}",
            "email": f"{first.lower()}.{last.lower()}{rnd.randrange(1000)}@example.com",
            "first_name": first,
            "last_name": last,
            "phone": f"+49 30 {rnd.randrange(10**7):07d}",
        },
        "billing_address": {
            "street": f"{rnd.choice(LAST)}straße {rnd.randint(1, 200)}",
            "city": rnd.choice(CITIES),
            "postal_code": f"{rnd.randrange(10**5):05d}",
            "country": "DE",
        },
        "shipping_address": {
            "street": f"{rnd.choice(LAST)}weg {rnd.randint(1, 200)}",
            "city": rnd.choice(CITIES),
            "postal_code": f"{rnd.randrange(10**5):05d}",
            "country": "DE",
        },
        "payment": {
            "method": "card",
            "card_number": luhn_card(),
            "cvv": f"{rnd.randrange(1000):03d}",
            "holder": f"{first} {last}",
            "authorization": "Bearer " + "".join(rnd.choices(string.ascii_letters, k=40)),
        },
        "lines": [],
        "notes": "Leave at the door",
    }
    while len(json.dumps(order, separators=(",", ":"), ensure_ascii=False).encode()) < 4096 - 260:
        order["lines"].append(line(len(order["lines"]) + 1))
    return json.dumps(order, separators=(",", ":"), ensure_ascii=False)


def request_of(bodies: list[str], first_corr: int) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    scope = req.resource_logs.add().scope_logs.add()
    for j, body in enumerate(bodies):
        rec = scope.log_records.add()
        rec.body.string_value = body
        rec.trace_id = rnd.randbytes(16)
        rec.span_id = rnd.randbytes(8)
        rec.time_unix_nano = time.time_ns()
        rec.attributes.extend(
            [
                KeyValue(key="syncwatch.correlation_id", value=AnyValue(string_value=f"SO-{first_corr + j:010d}")),
                KeyValue(key="syncwatch.payload.direction", value=AnyValue(string_value="request")),
                KeyValue(key="syncwatch.flow", value=AnyValue(string_value="orders")),
                KeyValue(key="syncwatch.destination", value=AnyValue(string_value="erp")),
                KeyValue(
                    key="syncwatch.source", value=AnyValue(string_value=("storefront", "erp")[(first_corr + j) % 2])
                ),
            ]
        )
    return req


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


AUDIT_FIELDS = [
    "$.order_id", "$.external_id", "$.created_at", "$.channel", "$.status", "$.currency",
    "$.customer.id", "$.customer.email", "$.customer.first_name", "$.customer.last_name", "$.customer.phone",
    "$.billing_address.street", "$.billing_address.city", "$.billing_address.postal_code",
    "$.billing_address.country", "$.shipping_address.street", "$.shipping_address.city",
    "$.shipping_address.postal_code", "$.payment.method", "$.notes",
]  # fmt: skip
AUDIT = {
    "flows": {
        "orders": {
            "record_key": "$.order_id",
            "fields": {
                p[2:]: {"path": p, "owner": "storefront" if i % 2 else "erp"} for i, p in enumerate(AUDIT_FIELDS)
            },
        }
    }
}


def tracked_field_bytes(n: int = 200_000) -> float:
    """Bytes of tracker state per tracked field: 10 fields per record, as the ownership map keeps them."""
    import tracemalloc

    from syncwatch.audit.tracker import Write, WriteTracker

    names = [f"field{i}" for i in range(10)]
    tracker = WriteTracker(n * 2)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for r in range(n // 10):
        corr = f"SO-{r:010d}"
        for name in names:
            tracker.observe(Write("orders", f"R-{r:08d}", name, "erp", 1.8e9 + r, rnd.getrandbits(64), None, corr), 60)
        if r % 10 == 9:
            tracker.take_changes()  # as the audit thread does with each batch it persists
    tracker.take_changes()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / tracker.fields


def tracked_disk_bytes(path: Path) -> str:
    """Bytes of audit.db pages holding the `tracked` table, per tracked field."""
    import sqlite3

    from syncwatch.audit import state

    conn = sqlite3.connect(path)
    try:
        pages = conn.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = 'tracked'").fetchone()[0] or 0
        fields = sum(len(f or {}) for _, _, f in state.load(conn))
    finally:
        conn.close()
    return f"{pages / max(fields, 1):.0f} bytes per tracked field ({fields} fields, {pages / 1e6:.1f} MB of pages)"


async def throughput(data_dir: Path, count: int, batch: int, audit: bool = False) -> None:
    bodies = [order_payload(i) for i in range(2000)]
    raw_total = 0
    requests = []
    for start in range(0, count, batch):
        chunk = [bodies[(start + j) % len(bodies)] for j in range(min(batch, count - start))]
        raw_total += sum(len(b.encode()) for b in chunk)
        requests.append(request_of(chunk, start))
    cfg = Config.model_validate({"storage": {"data_dir": str(data_dir)}, "audit": AUDIT if audit else {}})
    intake = SnapshotIntake(cfg, Metrics())
    await intake.start()
    began = time.perf_counter()
    cpu_began = time.process_time()
    for req in requests:
        rejected, message = await intake.export_logs(req)
        assert not rejected, message
    if intake.auditor is not None:  # counted until every payload is audited, not only stored
        await asyncio.to_thread(intake.auditor.wait)
        busy = intake.metrics.registry.get_sample_value("syncwatch_audit_skipped_total", {"reason": "busy"}) or 0
        assert not busy, f"{busy:.0f} payloads not audited (audit thread behind)"
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    stats = await intake._run(intake.store.stats)
    dict_id = stats.dictionary_id
    await intake.stop()
    if audit:
        print(f"   tracked state on disk: {tracked_disk_bytes(data_dir / 'audit.db')}")
    avg = raw_total / count
    label = "5. with a 20-field ownership map:" if audit else "1."
    print(
        f"{label} stored {count} snapshots of {avg:.0f} B JSON in {elapsed:.2f}s: {count / elapsed:,.0f} snapshots/s "
        f"({count / cpu:,.0f}/s per CPU-second of the process); dictionary in use: {'yes' if dict_id else 'no'}"
    )
    print(
        f"2. stored bytes / raw bytes: {stats.bytes / raw_total:.1%} ({stats.bytes / 1e6:.1f} MB in SQLite pages for "
        f"{raw_total / 1e6:.1f} MB of payloads, indexes and row headers included)"
    )


async def sweep_latency(data_dir: Path, rows: int) -> None:
    clock_now = [time.time()]
    cfg = Config.model_validate({"storage": {"data_dir": str(data_dir)}, "snapshots": {"sweep_interval": "1h"}})
    intake = SnapshotIntake(cfg, Metrics(), clock=lambda: clock_now[0])
    await intake.start()
    await intake.sweeper.stop()  # no periodic sweep: the one measured below starts on cue
    # Pre-fill `rows` expired snapshots, compressed like real ones, through the store interface.
    sample = Snapshot(
        corr="x",
        direction="request",
        received=0,
        time=0,
        trace_id=b"t" * 16,
        span_id=b"s" * 8,
        flow="orders",
        destination="erp",
        content_type="json",
        size=4096,
        sha256=b"h" * 32,
        truncated=False,
        redactions=4,
        body=order_payload(0).encode(),
    )
    old = clock_now[0] - 80 * HOUR
    began = time.perf_counter()

    def prefill() -> None:
        # Through the store interface: the first write compresses the sample (filling its blob),
        # the others reuse that blob, so the pre-fill costs no compression per row.
        sample.corr, sample.received, sample.time = f"SO-{0:010d}", old, old
        intake.store.put_many([sample])
        for start in range(1, rows, 50_000):
            intake.store.put_many(
                [
                    replace(sample, corr=f"SO-{i:010d}", received=old + i * 1e-3, time=old)
                    for i in range(start, min(rows, start + 50_000))
                ]
            )

    await intake._run(prefill)
    print(f"3. pre-filled {rows:,} expired snapshots ({len(sample.blob)} B each) in {time.perf_counter() - began:.1f}s")
    bodies = [order_payload(i) for i in range(200)]
    latencies: list[float] = []
    sweep = asyncio.create_task(intake.sweep_now())
    sweep_began = time.perf_counter()
    n = 0
    while not sweep.done():
        req = request_of(bodies[n % 190 : n % 190 + 10], 10_000_000 + n)
        t = time.perf_counter()
        rejected, _ = await intake.export_logs(req)
        latencies.append(time.perf_counter() - t)
        assert not rejected
        n += 10
        await asyncio.sleep(0.01)
    deleted = await sweep
    sweep_s = time.perf_counter() - sweep_began
    await intake.stop()
    ms = [x * 1000 for x in latencies]
    print(
        f"   swept {deleted:,} in {sweep_s:.1f}s ({deleted / sweep_s:,.0f}/s) while {len(ms)} intake requests of 10 snapshots ran: "
        f"latency p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms"
    )


def worst_cases() -> dict[str, str]:
    def fill(unit: str, size: int = 4096) -> str:
        text = unit * (size // len(unit) + 1)
        while len(text.encode()) > size:  # 4 KiB of UTF-8 (a no-break space is 2 bytes)
            text = text[:-1]
        return text

    cases = {
        "digits, spaces: 1 1 1": fill("1 "),
        "digits, dashes": fill("1-"),
        "digits, dots": fill("1."),
        "digits, tabs": fill("1\t"),
        "digits, no-break spaces": fill("1\u00a0"),
        "digits, %20": fill("1%20"),
        "digits, +": fill("1+"),
        "digits, double spaces": fill("1  "),
        "4-digit groups": fill("4111 "),
        "12-digit runs": fill("111111111111 x "),
        "IBAN heads": fill("AA00 "),
        "lower-case IBAN heads": fill("aa00"),
        "IBAN groups": fill("DE89 3704 "),
        "e-mails": fill("a@b.co "),
        "@s": fill("@"),
        "encoded @s": fill("%40"),
        "harmless pairs": fill("a="),
        "sensitive pairs": fill("pwd="),
        "unclosed quotes": fill('pwd=\\"x pwd=\\\\"x '),
        "header lines": fill("Cookie: a=1; "),
        "XML tags": fill("<password>"),
        "distinct XML tags": "".join(f"<password{i}>x" for i in range(500))[:4096],
        "brackets": fill("pwd=["),
        "brackets, escaped quotes": "pwd=[" + fill('\\"', 4091),
    }
    cases.update({f"in a JSON string: {k}": json.dumps({"a": v}, ensure_ascii=False) for k, v in list(cases.items())})
    cases["JSON: card-like numbers"] = json.dumps([4111111111111112] * 230)
    cases["JSON: sensitive keys, object values"] = "{" + ",".join(['"pwd":{"a":[1]}'] * 250) + "}"
    cases["JSON: documents in strings"] = json.dumps({"a": json.dumps({"b": json.dumps({"password": "x " * 600})})})
    return cases


def worst(rounds: int) -> None:
    from syncwatch.snapshots import REDACT_MARGIN
    from syncwatch.snapshots.redaction import Redactor

    redactor = Redactor(b"bench-key-0123456789abcdef")
    rows = []
    for name, body in worst_cases().items():
        redactor.redact_body(body)
        wall, cpu = [], []
        for _ in range(rounds):
            t, c = time.perf_counter(), time.thread_time()
            redactor.redact_body(body)
            cpu.append((time.thread_time() - c) * 1000)
            wall.append((time.perf_counter() - t) * 1000)
        rows.append((percentile(wall, 50), percentile(wall, 99), percentile(cpu, 50), name, len(body.encode())))
    rows.sort(reverse=True)
    print(f"4. 4 KiB worst cases ({len(rows)}, {rounds} runs each), slowest first (CPU: this thread's CPU time):")
    for p50, p99, cpu50, name, size in rows[:8]:
        print(f"   {name:45s} {size:5d} B  median {p50:5.2f} ms (CPU {cpu50:5.2f} ms)  p99 {p99:5.2f} ms")
    print(
        f"   slowest median {rows[0][0]:.2f} ms, CPU {max(r[2] for r in rows):.2f} ms (target < 10 ms); "
        f"median of all medians {percentile([r[0] for r in rows], 50):.2f} ms"
    )
    big = json.dumps({"note": "1 " * 64, "lines": [json.loads(order_payload(i)) for i in range(4000)]})
    head_wall, head_cpu = [], []
    for _ in range(5):
        t, c = time.perf_counter(), time.thread_time()
        redactor.redact_head(big.encode(), 1024 * 1024 + REDACT_MARGIN)
        head_cpu.append((time.thread_time() - c) * 1000)
        head_wall.append((time.perf_counter() - t) * 1000)
    print(
        f"   a {len(big) / 2**20:.0f} MiB JSON body at the default max_bytes (1 MiB): its head redacted in "
        f"{percentile(head_wall, 50):.0f} ms (CPU {percentile(head_cpu, 50):.0f} ms), median of 5"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=30_000, help="snapshots for the throughput run")
    parser.add_argument("--batch", type=int, default=100, help="log records per OTLP request")
    parser.add_argument("--sweep-rows", type=int, default=1_000_000, help="expired snapshots to sweep")
    parser.add_argument("--worst-rounds", type=int, default=200, help="runs of each worst-case payload")
    parser.add_argument("--only", choices=["throughput", "sweep", "worst", "audit"], help="run one part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="syncwatch-bench-") as tmp:
        if args.only in (None, "throughput"):
            asyncio.run(throughput(Path(tmp) / "a", args.count, args.batch))
        if args.only in (None, "sweep"):
            asyncio.run(sweep_latency(Path(tmp) / "b", args.sweep_rows))
        if args.only in (None, "worst"):
            worst(args.worst_rounds)
        if args.only in (None, "audit"):
            asyncio.run(throughput(Path(tmp) / "c", args.count, args.batch, audit=True))
            print(f"   tracker state: {tracked_field_bytes():.0f} bytes per tracked field")


if __name__ == "__main__":
    main()
