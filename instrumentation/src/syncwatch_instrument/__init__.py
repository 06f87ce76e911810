"""One call per step of a sync, emitted the way syncwatch reads it.

    from syncwatch_instrument import SyncInstrument

    sw = SyncInstrument(flow="orders", source="storefront", destination="erp")
    sw.source_changed(order_id)                          # the record changed at the source
    with sw.attempt(order_id, resend_count=n) as a:      # one delivery attempt
        a.snapshot_request(body)                         # payload snapshot (OTLP log record)
        resp = post(body)
        a.response(resp.status)                          # http.response.status_code
        a.snapshot_response(resp.text)
    sw.confirm(order_id, idempotency_key=order_id)       # the destination applied it
    sw.fail(order_id, error_type="retries_exhausted")    # the integration gave up

Built only on the OpenTelemetry API: spans and log records go wherever the integration's SDK
exports them (point its OTLP exporter at the sidecar). Without an SDK every call is a no-op.
Module-level functions of the same names use the global tracer and logger providers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Union

from opentelemetry import _logs, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import attributes as attr

__all__ = ["Attempt", "SyncInstrument", "attempt", "attr", "confirm", "fail", "snapshot", "source_changed"]
__version__ = "0.1.0"

_SCOPE = "syncwatch_instrument"
Payload = Union[str, bytes, Mapping[str, Any], list, None]
ChangedAt = Union[float, int, str, datetime, None]


def _payload_body(payload: Payload) -> Any:
    # Maps and lists travel as JSON text: the body a reader sees is the body that was sent.
    if isinstance(payload, (Mapping, list)):
        return json.dumps(payload, separators=(",", ":"), default=str)
    return payload


def _changed_at_value(changed_at: ChangedAt) -> float | str:
    if isinstance(changed_at, datetime):
        if changed_at.tzinfo is None:
            raise ValueError("changed_at: a naive datetime is ambiguous; give it a timezone")
        return changed_at.timestamp()
    if isinstance(changed_at, (int, float)) and not isinstance(changed_at, bool):
        return float(changed_at)
    if isinstance(changed_at, str):
        return changed_at  # RFC 3339, passed through for syncwatch to parse
    raise TypeError(f"changed_at: expected unix seconds, RFC 3339 text or datetime, got {type(changed_at).__name__}")


class Attempt:
    """One delivery attempt in progress: record its outcome and the payloads it carried."""

    def __init__(
        self,
        owner: SyncInstrument,
        span: Span,
        correlation_id: str,
        flow: str,
        source: str | None = None,
        destination: str | None = None,
    ):
        self._owner = owner
        self.span = span
        self.correlation_id = correlation_id
        self.flow = flow
        self.source = source
        self.destination = destination
        self.outcome_recorded = False

    def response(self, status_code: int) -> None:
        """HTTP response code of this attempt (a 4xx/5xx marks the span as an error)."""
        self.span.set_attribute(attr.HTTP_STATUS_CODE, int(status_code))
        self.outcome_recorded = True
        if int(status_code) >= 400:
            self.span.set_attribute(attr.ERROR_TYPE, str(int(status_code)))
            self.span.set_status(Status(StatusCode.ERROR))

    def response_code(self, code: str | int, ok: bool = True) -> None:
        """Response code of a non-HTTP destination (e.g. an ERP's BAPI return code)."""
        self.span.set_attribute(attr.RESPONSE_CODE, str(code))
        self.outcome_recorded = True
        if not ok:
            self.span.set_status(Status(StatusCode.ERROR))

    def error(self, error_type: str) -> None:
        """The attempt failed without a response (timeout, connection refused ...)."""
        self.span.set_attribute(attr.ERROR_TYPE, error_type)
        self.span.set_status(Status(StatusCode.ERROR, error_type))
        self.outcome_recorded = True

    def snapshot_request(self, payload: Payload, attributes: Mapping[str, Any] | None = None) -> None:
        self._snapshot(payload, attr.DIRECTION_REQUEST, attributes)

    def snapshot_response(self, payload: Payload, attributes: Mapping[str, Any] | None = None) -> None:
        self._snapshot(payload, attr.DIRECTION_RESPONSE, attributes)

    def _snapshot(self, payload: Payload, direction: str, attributes: Mapping[str, Any] | None) -> None:
        # Source and destination ride along: the payload audits name the writer of each field.
        extra = {k: v for k, v in ((attr.SOURCE, self.source), (attr.DESTINATION, self.destination)) if v}
        extra.update(attributes or {})
        self._owner.snapshot(self.correlation_id, payload, direction, flow=self.flow, span=self.span, attributes=extra)


class SyncInstrument:
    """Defaults (flow, source, destination) given once; each call may override them.

    `tracer_provider` / `logger_provider` default to the global ones. `correlation_key` is the
    attribute that carries the correlation ID (one of the keys syncwatch is configured to read).
    """

    def __init__(
        self,
        *,
        flow: str | None = None,
        source: str | None = None,
        destination: str | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        logger_provider: Any | None = None,
        correlation_key: str = attr.CORRELATION_ID,
    ):
        self.flow = flow
        self.source = source
        self.destination = destination
        self.correlation_key = correlation_key
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        self._logger = _logs.get_logger(_SCOPE, __version__, logger_provider=logger_provider)

    # -- the five calls -------------------------------------------------------------------

    def source_changed(
        self,
        correlation_id: str,
        *,
        flow: str | None = None,
        source: str | None = None,
        destination: str | None = None,
        changed_at: ChangedAt = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """The record changed at the source: opens one pending transaction per destination of
        the flow. `changed_at` defaults to now (the span's start)."""
        extra = dict(attributes or {})
        if changed_at is not None:
            extra[attr.SOURCE_CHANGED_AT] = _changed_at_value(changed_at)
        self._instant(attr.STAGE_SOURCE, correlation_id, flow, source, destination, extra, SpanKind.PRODUCER)

    @contextmanager
    def attempt(
        self,
        correlation_id: str,
        *,
        resend_count: int = 0,
        flow: str | None = None,
        source: str | None = None,
        destination: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Iterator[Attempt]:
        """One delivery attempt; `resend_count` is 0 on the first try, n on the n-th retry.
        An exception escaping the block is recorded as the attempt's `error.type`."""
        if resend_count < 0:
            raise ValueError("resend_count: must be 0 (first try) or more")
        flow_name, attrs = self._base(attr.STAGE_ATTEMPT, correlation_id, flow, source, destination)
        attrs[attr.RESEND_COUNT] = int(resend_count)
        attrs.update(attributes or {})
        with self._tracer.start_as_current_span(
            f"{flow_name} attempt",
            kind=SpanKind.CLIENT,
            attributes=attrs,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            current = Attempt(
                self,
                span,
                correlation_id,
                flow_name,
                attrs.get(attr.SOURCE),
                attrs.get(attr.DESTINATION),
            )
            try:
                yield current
            except BaseException as exc:
                if not current.outcome_recorded:
                    current.error(type(exc).__qualname__)
                span.record_exception(exc)
                raise

    def confirm(
        self,
        correlation_id: str,
        *,
        idempotency_key: str | None = None,
        flow: str | None = None,
        source: str | None = None,
        destination: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """The destination applied the change. A second confirm with the same idempotency key
        (default: correlation ID + destination) is what syncwatch counts as a duplicate apply."""
        extra = dict(attributes or {})
        if idempotency_key is not None:
            extra[attr.IDEMPOTENCY_KEY] = str(idempotency_key)
        self._instant(attr.STAGE_CONFIRM, correlation_id, flow, source, destination, extra, SpanKind.INTERNAL)

    def fail(
        self,
        correlation_id: str,
        *,
        error_type: str | None = None,
        flow: str | None = None,
        source: str | None = None,
        destination: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """The integration gave up on this transaction (retries exhausted, dead-lettered)."""
        extra = dict(attributes or {})
        if error_type is not None:
            extra[attr.ERROR_TYPE] = error_type
        self._instant(attr.STAGE_FAIL, correlation_id, flow, source, destination, extra, SpanKind.INTERNAL, error=True)

    def snapshot(
        self,
        correlation_id: str,
        payload: Payload,
        direction: str,
        *,
        flow: str | None = None,
        span: Span | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        """A payload snapshot as an OTLP log record: body = payload, attributes = correlation ID
        and direction (`request` | `response`), trace/span IDs of `span` (default: the current
        span, i.e. the attempt when called inside `with attempt(...)`)."""
        if direction not in (attr.DIRECTION_REQUEST, attr.DIRECTION_RESPONSE):
            raise ValueError(f"direction: expected 'request' or 'response', got {direction!r}")
        attrs: dict[str, Any] = {self.correlation_key: str(correlation_id), attr.PAYLOAD_DIRECTION: direction}
        flow_name = flow or self.flow
        if flow_name:
            attrs[attr.FLOW] = flow_name
        attrs.update(attributes or {})
        context = trace.set_span_in_context(span) if span is not None else None
        self._logger.emit(_logs.LogRecord(context=context, body=_payload_body(payload), attributes=attrs))

    # -- internals ------------------------------------------------------------------------

    def _base(
        self, stage: str, correlation_id: str, flow: str | None, source: str | None, destination: str | None
    ) -> tuple[str, dict[str, Any]]:
        flow_name = flow or self.flow
        if not flow_name:
            raise ValueError("flow: name the flow (e.g. 'orders') here or in SyncInstrument(flow=...)")
        if correlation_id is None or str(correlation_id) == "":
            raise ValueError("correlation_id: every step needs the transaction's correlation ID")
        attrs: dict[str, Any] = {self.correlation_key: str(correlation_id), attr.STAGE: stage, attr.FLOW: flow_name}
        src = source or self.source
        dst = destination or self.destination
        if src:
            attrs[attr.SOURCE] = src
        if dst:
            attrs[attr.DESTINATION] = dst
        return flow_name, attrs

    def _instant(self, stage, correlation_id, flow, source, destination, extra, kind, error=False) -> None:
        flow_name, attrs = self._base(stage, correlation_id, flow, source, destination)
        attrs.update(extra)
        span = self._tracer.start_span(f"{flow_name} {stage}", kind=kind, attributes=attrs)
        if error:
            span.set_status(Status(StatusCode.ERROR, str(extra.get(attr.ERROR_TYPE, "failed"))))
        span.end()


# Module-level calls on the global providers, for integrations that need no per-call defaults.
_default = SyncInstrument()
source_changed = _default.source_changed
attempt = _default.attempt
confirm = _default.confirm
fail = _default.fail
snapshot = _default.snapshot
