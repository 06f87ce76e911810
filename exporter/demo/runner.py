"""Runs the whole flash-sale demo on one asyncio loop: the syncwatch sidecar (in-process, on its
embedded defaults: SQLite, loopback ports), the queue, the fake ERP and its nightly customer sync,
the storefront and the middleware worker, a live view, and at the end the reconciliation against
ground truth."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import yaml
from syncwatch_instrument import SyncInstrument

from syncwatch.demo.databases import DESTINATION_QUERY, SOURCE_QUERY, ErpDb, StorefrontDb
from syncwatch.demo.erp import FakeErp
from syncwatch.demo.live import MetricsView, live_line, scrape
from syncwatch.demo.nightly import NightlySync
from syncwatch.demo.queues import RabbitQueue, SqsQueue
from syncwatch.demo.scenario import DemoSettings, FaultPlan
from syncwatch.demo.storefront import Storefront, schedule
from syncwatch.demo.telemetry import ServiceTelemetry
from syncwatch.demo.truth import Findings, GroundTruth, fetch_findings
from syncwatch.demo.worker import Worker

EXACTLY_ONCE = {"orders": True, "inventory": True, "customers": False}
SAMPLE_FAST = 2.0  # sampling.fast_interval of the demo config
BROKER_STATS_LAG = 15.0  # RabbitMQ's management stats refresh every 5 s by default, plus a sampling cycle
RECONCILE_INTERVAL = 2.0  # the demo's reconciler runs every 2 s (compressed from minutes)
RECONCILE_LAG = 15.0  # how long the report waits for a reconciler run that covers every deadline
SYNC_WINDOW = 30.0  # the customers flow's audit sync window, compressed from a night's 24 h


@dataclass
class DemoResult:
    truth: GroundTruth
    findings: Findings
    metrics: MetricsView
    config_path: Path
    api_url: str
    token: str
    worker_outcomes: dict[str, int] = field(default_factory=dict)
    worker_attempts: dict[str, int] = field(default_factory=dict)  # per flow


DEFAULT_LISTEN = {"http": 9873, "otlp_http": 4318, "otlp_grpc": 4317}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listen_addresses(default_ports: bool) -> dict[str, str]:
    """syncwatch's default loopback ports when all are free (so Prometheus and the docs' URLs work),
    otherwise ports the OS picks."""
    use_defaults = default_ports and all(_port_free(p) for p in DEFAULT_LISTEN.values())
    return {k: f"127.0.0.1:{p if use_defaults else 0}" for k, p in DEFAULT_LISTEN.items()}


def demo_config(
    settings: DemoSettings,
    data_dir: Path,
    collector: dict[str, Any],
    token_file: Path,
    listen: dict[str, str],
    databases: tuple[Path, Path] | None = None,
) -> dict[str, Any]:
    """The sidecar's configuration for the demo: embedded SQLite store, loopback ports,
    compressed deadlines, a collector pointed at the demo's queue, a reconciler on the storefront's
    and the ERP's databases, and the customers flow's field-ownership audit."""
    config: dict[str, Any] = {
        "listen": listen,
        "storage": {"data_dir": str(data_dir)},
        "flows": {
            flow: {
                "destinations": ["erp"],
                "deadline": f"{settings.deadlines[flow]:g}s",
                "exactly_once": EXACTLY_ONCE[flow],
            }
            for flow in ("orders", "inventory", "customers")
        },
        "api": {"token_file": str(token_file)},
        "collectors": [{**collector, "timeout": "1500ms"}],
        # Compressed time: sample every 4 s, every 2 s while the DLQ is not empty or depth grows.
        "sampling": {"interval": "4s", "fast_interval": "2s"},
        # A shipping address is customer data: redacted before storing; the audit compares the
        # keyed hash of its marker, so the conflict is found without keeping the address.
        "snapshots": {"redact": {"paths": ["$.shipping.address"]}},
        # The seed's write conflict: the storefront owns the shipping address, the ERP's nightly sync
        # writes it too.
        "audit": {
            "flows": {
                "customers": {
                    "record_key": "$.customer_id",
                    "sync_window": f"{SYNC_WINDOW:g}s",
                    "fields": {"shipping.address": {"path": "$.shipping.address", "owner": "storefront"}},
                }
            }
        },
    }
    if databases is not None:
        storefront_db, erp_db = databases
        config["reconcilers"] = [
            {
                "type": "sql",
                "name": "storefront-erp",
                "interval": f"{RECONCILE_INTERVAL:g}s",
                "databases": {
                    "storefront": {"url": f"sqlite:///{storefront_db.resolve()}"},
                    "erp": {"url": f"sqlite:///{erp_db.resolve()}"},
                },
                "flows": {
                    "orders": {
                        "source": {"database": "storefront", "query": SOURCE_QUERY},
                        "destination": {"database": "erp", "query": DESTINATION_QUERY},
                    }
                },
            }
        ]
    return config


async def run_demo(
    settings: DemoSettings,
    *,
    rabbitmq_url: str | None = None,
    data_dir: Path | None = None,
    keep_running: bool = False,
    out: TextIO = sys.stdout,
    live: bool = True,
    default_ports: bool = False,
) -> DemoResult:
    from syncwatch.app import App
    from syncwatch.settings import load_config

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    run_id = uuid.uuid4().hex[:8]
    data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="syncwatch-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    if any(data_dir.iterdir()):
        # An earlier run's ledger would turn up in this run's reconciliation as false positives.
        raise ValueError(f"{data_dir} is not empty (an earlier run?): the demo needs an empty directory")
    records = schedule(settings)
    plan = FaultPlan.draw(
        settings, [r.id for r in records if r.flow == "orders"], [r.id for r in records if r.flow == "inventory"]
    )
    queue = (
        RabbitQueue(rabbitmq_url, settings.max_attempts, run_id)
        if rabbitmq_url
        else SqsQueue(settings.max_attempts, run_id)
    )
    storefront_db = StorefrontDb(data_dir / "storefront.db")
    erp_db = ErpDb(data_dir / "erp.db")
    erp = FakeErp(settings, plan, erp_db)
    app = telemetry_sf = telemetry_mw = telemetry_erp = None
    worker_stop = asyncio.Event()
    tasks: list[asyncio.Task] = []
    token = secrets.token_urlsafe(24)
    try:
        say(
            f"syncwatch demo: flash sale at {settings.sale_multiplier:g}x normal order volume, "
            f"{len(records)} records over {settings.production_seconds:.0f}s "
            f"(deadlines: {', '.join(f'{k} {v:g}s' for k, v in settings.deadlines.items())})"
        )
        await queue.start()
        await erp.start()
        config_path = data_dir / "syncwatch-demo.yaml"
        token_file = data_dir / "api-token"
        token_file.touch(mode=0o600)
        token_file.write_text(token + "\n")
        raw_config = demo_config(
            settings,
            data_dir,
            queue.collector_config(),
            token_file,
            listen_addresses(default_ports),
            (storefront_db.path, erp_db.path),
        )
        config_path.write_text(yaml.safe_dump(raw_config, sort_keys=False))
        config = load_config(config_path, environ={})
        app = App(config)
        await app.start()
        # Record the ports actually bound, so `syncwatch run --config` restarts it where it was.
        raw_config["listen"] = {k: f"127.0.0.1:{app.ports[k]}" for k in DEFAULT_LISTEN}
        config_path.write_text(yaml.safe_dump(raw_config, sort_keys=False))
        base = f"http://127.0.0.1:{app.ports['http']}"
        otlp = f"http://127.0.0.1:{app.ports['otlp_http']}"
        say(f"  syncwatch: metrics {base}/metrics, OTLP/HTTP {otlp}, OTLP/gRPC 127.0.0.1:{app.ports['otlp_grpc']}")
        say(f"  queue: {queue.broker} {queue.queue_name} (DLQ {queue.dlq_name}), ERP {erp.url}, data {data_dir}")
        say()

        telemetry_sf = ServiceTelemetry("storefront", otlp)
        telemetry_mw = ServiceTelemetry("middleware", otlp)
        telemetry_erp = ServiceTelemetry("erp", otlp)
        storefront = Storefront(
            records,
            queue,
            SyncInstrument(
                source="storefront",
                destination="erp",
                tracer_provider=telemetry_sf.tracer_provider,
                logger_provider=telemetry_sf.logger_provider,
            ),
            storefront_db,
        )
        worker = Worker(
            settings,
            queue,
            erp.url,
            plan,
            SyncInstrument(
                source="storefront",
                destination="erp",
                tracer_provider=telemetry_mw.tracer_provider,
                logger_provider=telemetry_mw.logger_provider,
            ),
        )
        nightly = NightlySync(
            erp,
            storefront,
            SyncInstrument(
                source="erp",
                destination="storefront",
                tracer_provider=telemetry_erp.tracer_provider,
                logger_provider=telemetry_erp.logger_provider,
            ),
            telemetry_mw.flush,
            settings.seed,
        )
        started = time.monotonic()
        tasks.append(asyncio.create_task(storefront.run()))
        tasks.append(asyncio.create_task(worker.run(worker_stop)))
        tasks.append(asyncio.create_task(nightly.run(worker_stop)))
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

        async def show() -> MetricsView:
            view = await scrape(session, base)
            if live:
                orders = sum(1 for f in storefront.sent.values() if f == "orders")
                say(live_line(time.monotonic() - started, orders, view))
            return view

        try:
            # Phase 1: the sale. Phase 2: drain the queue (retries finish, dead letters land).
            next_view = time.monotonic()
            while True:
                if time.monotonic() >= next_view:
                    await show()
                    next_view += settings.live_interval
                if storefront.done.is_set() and worker.busy == 0 and await queue.backlog() == 0:
                    break
                for t in tasks:
                    if t.done() and t.exception():
                        raise t.exception()
                if worker.errors:
                    raise RuntimeError("the simulated worker failed (see the log above); the run cannot be reconciled")
                await asyncio.sleep(0.25)
            worker_stop.set()
            await asyncio.gather(*tasks)
            # Everything the integration emitted reaches syncwatch (an export returns once it is recorded).
            exported = [await asyncio.to_thread(t.flush) for t in (telemetry_sf, telemetry_mw, telemetry_erp)]
            if not all(exported):
                say(
                    "WARNING: the simulated services could not export all their telemetry to syncwatch; "
                    "the reconciliation below will show what went missing"
                )
            # Phase 3: wait out the deadlines of whatever is still open, and one more queue sample.
            open_ids = set(storefront.sent) - set(erp.applies)
            last_deadline = max(
                (storefront.changed_at[i] + settings.deadlines[storefront.sent[i]] for i in open_ids), default=0.0
            )
            settle_until = max(last_deadline + 1.0, time.time() + 2 * SAMPLE_FAST + 0.5)
            while time.time() < settle_until:
                if time.monotonic() >= next_view:
                    await show()
                    next_view += settings.live_interval
                await asyncio.sleep(min(0.25, max(0.0, settle_until - time.time())))
            # The collector samples what the broker reports; RabbitMQ's management API refreshes its
            # counts only every few seconds, so give the sample time to catch up with the queue.
            broker_dlq = await queue.dlq_depth()
            catch_up = time.monotonic() + BROKER_STATS_LAG
            while (await scrape(session, base)).total("syncwatch_dlq_messages") != broker_dlq:
                if time.monotonic() > catch_up:
                    say(
                        f"WARNING: syncwatch's DLQ sample still differs from the broker's count ({broker_dlq}) "
                        f"after {BROKER_STATS_LAG:g}s"
                    )
                    break
                await asyncio.sleep(0.5)
            # The reconciler judges an order once its deadline has passed: wait for a run that began
            # after the last unconfirmed order's deadline (its window end is set when it finishes).
            unapplied = [i for i, f in storefront.sent.items() if f == "orders" and i not in erp.applies]
            judged_after = max(
                (storefront.changed_at[i] + settings.deadlines["orders"] for i in unapplied), default=0.0
            )
            reconciled_by = time.monotonic() + RECONCILE_LAG
            while (await scrape(session, base)).total(
                "syncwatch_reconcile_window_end_timestamp_seconds", flow="orders"
            ) < judged_after:
                if time.monotonic() > reconciled_by:
                    say(f"WARNING: no reconciler run covered the last order's deadline within {RECONCILE_LAG:g}s")
                    break
                await asyncio.sleep(0.5)
            final = await show()
            truth = GroundTruth.measure(
                storefront.sent,
                erp.applies,
                await queue.dlq_records(),
                EXACTLY_ONCE,
                destination_orders=erp_db.external_ids("orders"),
                address_writes=storefront.address_writes,
                sync_window=SYNC_WINDOW,
            )
            findings = await fetch_findings(session, base, token, final)
        finally:
            await session.close()

        from syncwatch.demo.report import render_report

        say()
        say(render_report(truth, findings, final, worker.outcomes, config_path, base, token_file, keep_running))
        result = DemoResult(
            truth, findings, final, config_path, base, token, dict(worker.outcomes), dict(worker.attempts)
        )
        if keep_running:
            say(f"\nsyncwatch keeps running: point Prometheus at {base}/metrics (OTLP/HTTP {otlp}). Ctrl-C to stop.")
            await _wait_forever()
        return result
    finally:
        worker_stop.set()
        for t in tasks:
            t.cancel()
        for tel in (telemetry_sf, telemetry_mw, telemetry_erp):
            if tel is not None:
                await asyncio.to_thread(tel.shutdown)
        if app is not None:
            await app.stop()
        await erp.stop()
        await queue.stop()
        storefront_db.close()
        erp_db.close()


async def _wait_forever() -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
