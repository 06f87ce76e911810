"""Wires the sidecar together on one asyncio loop: OTLP receivers, the ledger writer, snapshots,
collectors, and the HTTP port with /metrics, /healthz, /readyz and the query API."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.exposition import choose_encoder

from syncwatch import __version__
from syncwatch.config.models import Config
from syncwatch.intake.body import BodyDecoder
from syncwatch.intake.extract import SpanExtractor
from syncwatch.intake.grpc import build_server as build_grpc_server
from syncwatch.intake.http import RUNNER_OPTIONS as OTLP_HTTP_RUNNER_OPTIONS
from syncwatch.intake.http import build_app as build_otlp_http_app
from syncwatch.intake.service import OtlpService
from syncwatch.intake.writer import LedgerWriter
from syncwatch.ledger.transitions import Ledger
from syncwatch.metrics.registry import Metrics

log = logging.getLogger("syncwatch")


def _tune_gc() -> None:
    """Intake allocates millions of short-lived, acyclic tuples and lists; at the default threshold
    the cyclic collector runs every 700 allocations, about every 150 spans, and each full pass walks
    every open transaction. Collect less often, and move what was reloaded at start out of its reach."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 -- ":4318" asks for every interface


class App:
    def __init__(self, config: Config, clock=time.time):
        self.config = config
        self.clock = clock
        self.metrics = Metrics()
        self.ledger = Ledger(config, self.metrics, clock)
        self.lease = self._make_lease()
        from syncwatch.rules.engine import build_engine
        from syncwatch.rules.metrics import RulesMetrics

        rules = build_engine(
            config.rules, config.limits.max_correlation_id_length, RulesMetrics(self.metrics.registry)
        )  # compiled once: a bad pattern fails here, naming the rule and key
        self.writer = LedgerWriter(
            self.ledger,
            SpanExtractor(config.correlation.keys, config.limits.max_correlation_id_length, rules),
            self.metrics,
            config.intake.max_queued_spans,
            config.intake.max_batch_spans,
            clock,
            lease=self.lease,
        )
        self.snapshots = self._make_snapshots()
        if self.snapshots is not None and self.snapshots.auditor is not None:
            self.writer.record_ids_sink = self.snapshots.auditor.submit_record_ids  # duplicate-record audit
        self.service = OtlpService(
            self.writer, self.metrics, snapshots=self.snapshots, retry_after=config.intake.retry_after, clock=clock
        )
        # Both OTLP receivers share one budget of request-body bytes and one decode pool.
        self.bodies = BodyDecoder(config.intake.max_body_bytes)
        self.collectors = self._make_collectors()
        self.dead_letters = self.collectors.dead_letters if self.collectors is not None else None
        self.reconcilers = self._make_reconcilers()
        self.ready = False
        self._leading_services: bool | None = None  # collectors and reconcilers run (leader only)
        self._role_task: asyncio.Task[None] | None = None
        self._runners: list[web.AppRunner] = []
        self._grpc = None
        self.ports: dict[str, int] = {}

    def _make_lease(self):
        """Replicas on one PostgreSQL ledger elect a leader (ledger/lease.py); SQLite always leads."""
        if self.config.storage.backend != "postgresql":
            return None
        from syncwatch.ledger.lease import Lease
        from syncwatch.ledger.postgres_store import PostgresStore

        store = self.ledger.store
        assert isinstance(store, PostgresStore)  # storage.backend: postgresql
        return Lease(store.dsn, store.lease_ttl, store.connect_timeout)

    def _make_snapshots(self):
        if not self.config.snapshots.enabled:
            return None
        from syncwatch.snapshots import SnapshotIntake

        return SnapshotIntake(self.config, self.metrics, clock=self.clock)

    def _make_collectors(self):
        if not self.config.collectors:
            return None
        from syncwatch.collectors.manager import CollectorManager
        from syncwatch.dead_letters import book_for_config

        return CollectorManager(
            self.config.collectors,
            self.config.sampling,
            self.metrics.registry,
            clock=self.clock,
            dead_letters=lambda: book_for_config(self.config, self.clock),
        )

    def _make_reconcilers(self):
        if not self.config.reconcilers:
            return None
        from syncwatch.ledger.reader import open_queries
        from syncwatch.reconcile.manager import ReconcileManager

        c = self.config
        ledger = open_queries(c, self.clock)
        return ReconcileManager(
            c.reconcilers, c.flows, c.storage.data_dir, ledger, self.metrics.registry, clock=self.clock
        )

    def _http_app(self) -> web.Application:
        app = web.Application(middlewares=[self._count_refusals])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/", self._index)
        from syncwatch.api.routes import setup_api

        setup_api(app, config=self.config, snapshots=self.snapshots, clock=self.clock)
        from syncwatch.api.deadletters import setup_dead_letter_api
        from syncwatch.ui import setup_ui

        setup_dead_letter_api(app, config=self.config, dead_letters=self.dead_letters)

        ui = dict(snapshots=self.snapshots, collectors=self.collectors, dead_letters=self.dead_letters)
        setup_ui(app, config=self.config, clock=self.clock, **ui)
        from syncwatch.api.audit import setup_audit_api

        setup_audit_api(app, config=self.config, snapshots=self.snapshots, clock=self.clock)
        return app

    async def start(self) -> None:
        started = time.perf_counter()
        if self.lease is None:
            loaded = await asyncio.to_thread(self.ledger.load)
            self.ledger.tick()
            log.info(
                "ledger %s: %d open transactions reloaded in %.2fs",
                self.config.storage.ledger_path,
                loaded,
                time.perf_counter() - started,
            )
        else:
            # The first lease attempt, then the writer's role: a replica that leads loads the ledger.
            await asyncio.to_thread(self.lease.start)
            await asyncio.to_thread(self.writer.sync_role)
            if not self.writer.leading:
                log.info("ledger on PostgreSQL: another replica leads, handing spans off to it")
        _tune_gc()
        self.writer.start()
        if self.snapshots is not None:
            await self.snapshots.start()
        listen = self.config.listen
        self.ports["http"] = await self._serve(self._http_app(), listen.http)
        self.ports["otlp_http"] = await self._serve(
            build_otlp_http_app(self.service, self.bodies), listen.otlp_http, **OTLP_HTTP_RUNNER_OPTIONS
        )
        self._grpc, self.ports["otlp_grpc"] = build_grpc_server(self.service, listen.otlp_grpc, self.bodies)
        await self._grpc.start()
        await self._follow_role()
        self._role_task = asyncio.create_task(self._watch_role(), name="leader-role")
        self.ready = True
        log.info(
            "syncwatch %s ready: OTLP/gRPC %s, OTLP/HTTP %s, HTTP (metrics, API) %s",
            __version__,
            listen.otlp_grpc,
            listen.otlp_http,
            listen.http,
        )

    async def _serve(self, app: web.Application, address: str, **runner_options) -> int:
        runner = web.AppRunner(app, access_log=None, **runner_options)
        await runner.setup()
        host, port = _split(address)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        self._runners.append(runner)
        return runner.addresses[0][1] if runner.addresses else port

    async def _follow_role(self) -> None:
        """Collectors and reconcilers run on the leader only; a follower exports none of their gauges
        (at start too: the series registered at construction go until this replica leads)."""
        leading = self.writer.leading
        if leading == self._leading_services:
            return
        self._leading_services = leading
        if leading:
            if self.collectors is not None:
                await self.collectors.resume()
            if self.reconcilers is not None:
                await self.reconcilers.resume()
        else:
            if self.collectors is not None:
                await self.collectors.pause()
            if self.reconcilers is not None:
                await self.reconcilers.pause()

    async def _watch_role(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            try:
                await self._follow_role()
            except Exception:  # a broken collector start must not end the watch
                log.exception("starting or stopping the leader's collectors and reconcilers failed")

    async def stop(self) -> None:
        self.ready = False
        if self._role_task is not None:
            self._role_task.cancel()
            await asyncio.gather(self._role_task, return_exceptions=True)
        if self.collectors is not None:
            await self.collectors.stop()
        if self.reconcilers is not None:
            await self.reconcilers.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace=2)
        for runner in reversed(self._runners):
            await runner.cleanup()
        self.bodies.close()
        if self.snapshots is not None:
            await self.snapshots.stop()
        await asyncio.to_thread(self.writer.stop)
        if self.lease is not None:
            await asyncio.to_thread(self.lease.stop)  # hands the lease on at once
        self.ledger.close()

    async def run_forever(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
        await self.stop()

    # ---- HTTP handlers ------------------------------------------------------------------------
    async def _metrics(self, request: web.Request) -> web.Response:
        # Prometheus text or OpenMetrics, as the scraper's Accept header asks.
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.to_thread(encoder, self.metrics.registry)  # collectors' callbacks stay off the loop
        return web.Response(body=body, headers={"Content-Type": content_type})

    @web.middleware
    async def _count_refusals(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request the API or the web view refuses for its token is counted: a guessing
        client, or an integration with a rotated token, shows up on /metrics."""
        response = await handler(request)
        if response.status == 401:
            self.metrics.auth_refusals.labels("ui" if request.path.startswith("/ui") else "api").inc()
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="starting\n")
        if not self.writer.healthy:
            return web.Response(status=503, text=f"ledger not writable: {self.writer.last_error}\n")
        return web.Response(text="ready\n")

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=f"syncwatch {__version__}: /metrics /healthz /readyz /api/v1/transactions\n")
