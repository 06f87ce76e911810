"""What an OTLP export does, independent of transport (HTTP or gRPC)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from syncwatch.intake.decode import OtlpError
from syncwatch.intake.trace_view import span_count
from syncwatch.intake.writer import ExtractionFailed, IntakeFull, LedgerFailed, LedgerWriter
from syncwatch.metrics.registry import Metrics

if TYPE_CHECKING:
    from syncwatch.snapshots import SnapshotIntake

log = logging.getLogger("syncwatch.otlp")


class OtlpService:
    def __init__(
        self,
        writer: LedgerWriter,
        metrics: Metrics,
        snapshots: SnapshotIntake | None = None,
        retry_after: float = 1.0,
        clock: Callable[[], float] = time.time,
    ):
        self.writer = writer
        self.metrics = metrics
        self.snapshots = snapshots
        self.retry_after = max(1, round(retry_after))
        self.clock = clock
        m = metrics.spans
        self._correlated, self._uncorrelated, self._rejected = (
            m.labels("correlated"),
            m.labels("uncorrelated"),
            m.labels("rejected"),
        )
        self._unrelated = m.labels("unrelated")

    async def export_traces(self, request: Any, total: int | None = None) -> ExportTraceServiceResponse:
        """Record the request's spans (a trace_view.TraceView; `total` its span count, as the
        receivers' parse step counted it off the loop); return once durable. Raises OtlpError for refusals."""
        response = ExportTraceServiceResponse()
        if total is None:
            total = span_count(request)
        if not total:
            return response
        if total > self.writer.max_queued:
            self.metrics.dropped.labels("too_large").inc(total)
            raise OtlpError(
                413,
                f"{total} spans in one request, over intake.max_queued_spans "
                f"({self.writer.max_queued}); send smaller batches",
                "too_large",
                counted=True,
            )
        try:
            future = self.writer.submit(request, total)
        except IntakeFull:
            self.metrics.dropped.labels("backpressure").inc(total)
            raise OtlpError(503, "syncwatch intake queue is full; retry later", "backpressure", counted=True) from None
        try:
            out = await future
        except ExtractionFailed as exc:
            self.metrics.dropped.labels("internal_error").inc(total)
            raise OtlpError(
                500, f"syncwatch could not read this request ({exc}); please report it", "internal_error", counted=True
            ) from None
        except LedgerFailed as exc:
            self.metrics.dropped.labels("ledger_error").inc(total)
            raise OtlpError(
                500,
                f"syncwatch could not record this request ({exc}), a bug of its own; please report it",
                "ledger_error",
                counted=True,
            ) from None
        except Exception as exc:
            self.metrics.dropped.labels("ledger_unavailable").inc(total)
            raise OtlpError(
                503, f"ledger write failed ({type(exc).__name__}); retry later", "ledger_unavailable", counted=True
            ) from None
        if out.correlated:
            self._correlated.inc(out.correlated)
        if out.uncorrelated:
            self._uncorrelated.inc(out.uncorrelated)
        if out.unrelated:
            self._unrelated.inc(out.unrelated)
        if out.rejected:
            self._rejected.inc(out.rejected)
            self.metrics.dropped.labels("invalid_span").inc(out.rejected)
            response.partial_success.rejected_spans = out.rejected
            response.partial_success.error_message = out.error_message
        return response

    async def export_logs(self, request: Any, total: int | None = None) -> ExportLogsServiceResponse:
        response = ExportLogsServiceResponse()
        if self.snapshots is None:
            # No snapshot store configured (snapshots.enabled: false): records are counted, not kept.
            n = (
                total
                if total is not None
                else sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
            )
            self.metrics.log_records.labels("not_stored").inc(n)
            return response
        rejected, message = await self.snapshots.export_logs(request)
        if rejected:
            response.partial_success.rejected_log_records = rejected
            response.partial_success.error_message = message
        return response
