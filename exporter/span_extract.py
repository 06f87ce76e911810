"""Turn an OTLP ExportTraceServiceRequest into ledger events.

This is the hot path of span intake: it reads only the attributes syncwatch needs and builds one
plain tuple per stage span, in the column order of the ledger's `spans` table. Everything else
(correlated spans without a stage, uncorrelated spans) is only counted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime

from .ledger_schema import STAGE_NAMES, STAGE_SOURCE

# Slots of the attributes we read; anything else is skipped with one dict lookup.
_STAGE, _FLOW, _SOURCE, _DEST, _PEER, _SERVER, _CHANGED, _RESEND, _HTTP_CODE, _CODE, _ERROR, _IDEM = range(12)
_WANTED = {
    "syncwatch.stage": _STAGE,
    "syncwatch.flow": _FLOW,
    "syncwatch.source": _SOURCE,
    "syncwatch.destination": _DEST,
    "peer.service": _PEER,
    "server.address": _SERVER,
    "syncwatch.source.changed_at": _CHANGED,
    "http.request.resend_count": _RESEND,
    "http.response.status_code": _HTTP_CODE,
    "syncwatch.response_code": _CODE,
    "error.type": _ERROR,
    "syncwatch.idempotency_key": _IDEM,
}
_CORR_BASE = 100  # slot of correlation key i is _CORR_BASE + i (lower i wins)
_NO_RANK = 1 << 30
_MAX_ERRORS = 5  # error messages kept per request for partial_success

_intern = sys.intern


def any_value(v):
    """Python value of an OTLP AnyValue (scalars only; arrays/maps become their text form)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind is None:
        return None
    return str(v)


def parse_timestamp(value) -> float:
    """Unix seconds (number or numeric string; nanoseconds/milliseconds recognised by size) or RFC 3339."""
    if isinstance(value, bool):
        raise ValueError("expected unix seconds or RFC 3339")
    if isinstance(value, (int, float)):
        ts = float(value)
    else:
        text = str(value).strip()
        try:
            ts = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise ValueError(f"expected unix seconds or RFC 3339, got {text[:40]!r}") from None
            if parsed.tzinfo is None:
                raise ValueError(f"RFC 3339 time needs a zone offset, got {text[:40]!r}")
            return parsed.timestamp()
    if ts > 1e17:  # nanoseconds
        ts /= 1e9
    elif ts > 1e14:  # microseconds
        ts /= 1e6
    elif ts > 1e11:  # milliseconds
        ts /= 1e3
    return ts


@dataclass
class Extracted:
    events: list = field(default_factory=list)  # tuples for the ledger (see ledger.EVENT_COLUMNS)
    correlated: int = 0
    uncorrelated: int = 0
    rejected: int = 0
    errors: list = field(default_factory=list)

    def reject(self, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(message)

    @property
    def error_message(self) -> str:
        if not self.errors:
            return ""
        more = self.rejected - len(self.errors)
        return "; ".join(self.errors) + (f"; and {more} more" if more > 0 else "")


class SpanExtractor:
    def __init__(self, correlation_keys: list[str]):
        self._wanted = dict(_WANTED)
        for i, key in enumerate(correlation_keys):
            self._wanted[key] = _CORR_BASE + i

    def extract(self, request, received: float) -> Extracted:
        out = Extracted()
        events = out.events
        wanted_get = self._wanted.get
        event = self._event
        correlated = uncorrelated = 0
        for rs in request.resource_spans:
            # Resource attributes give defaults (e.g. an integration that sets syncwatch.flow once).
            base, base_corr, base_rank = {}, None, _NO_RANK
            for kv in rs.resource.attributes:
                slot = wanted_get(kv.key)
                if slot is not None:
                    val = any_value(kv.value)
                    if slot < _CORR_BASE:
                        base[slot] = val
                    elif val not in (None, "") and slot < base_rank:
                        base_corr, base_rank = str(val), slot
            for ss in rs.scope_spans:
                for span in ss.spans:
                    found = None
                    corr, rank = base_corr, base_rank
                    for kv in span.attributes:
                        slot = wanted_get(kv.key)
                        if slot is None:
                            continue
                        v = kv.value
                        val = v.string_value
                        if not val:
                            val = any_value(v)
                            if val is None or val == "":
                                continue
                        if slot >= _CORR_BASE:
                            if slot < rank:
                                corr, rank = val, slot
                        else:
                            if found is None:
                                found = dict(base)
                            found[slot] = val
                    if corr is None:
                        uncorrelated += 1
                        continue
                    if found is None:
                        found = base
                    stage_name = found.get(_STAGE)
                    if stage_name is None:
                        correlated += 1  # context span of a transaction: counts for coverage only
                        continue
                    ev = event(span, found, str(corr), stage_name, received, out)
                    if ev is not None:
                        correlated += 1
                        events.append(ev)
        out.correlated, out.uncorrelated = correlated, uncorrelated
        return out

    @staticmethod
    def _event(span, found, corr, stage_name, received, out: Extracted):
        stage = STAGE_NAMES.get(stage_name)
        where = f"span {span.span_id.hex() or '?'}"
        if stage is None:
            out.reject(f"{where}: syncwatch.stage must be source, attempt, confirm or fail, got {str(stage_name)[:40]!r}")
            return None
        if len(span.trace_id) != 16 or len(span.span_id) != 8:
            out.reject(f"{where}: trace_id must be 16 bytes and span_id 8 bytes")
            return None
        flow = found.get(_FLOW)
        if not flow:
            out.reject(f"{where}: syncwatch.flow is missing on a {stage_name} span")
            return None
        dest = found.get(_DEST) or found.get(_PEER) or found.get(_SERVER)
        if not dest and stage != STAGE_SOURCE:
            out.reject(f"{where}: no destination (syncwatch.destination, peer.service or server.address) on a {stage_name} span")
            return None
        start = span.start_time_unix_nano / 1e9
        end = span.end_time_unix_nano / 1e9 if span.end_time_unix_nano else start
        changed_at = None
        raw_changed = found.get(_CHANGED)
        if raw_changed is not None and raw_changed != "":
            try:
                changed_at = parse_timestamp(raw_changed)
            except ValueError as exc:
                out.reject(f"{where}: syncwatch.source.changed_at: {exc}")
                return None
        elif stage == STAGE_SOURCE:
            changed_at = start
        attempt = None
        resend = found.get(_RESEND)
        if resend is not None:
            try:
                attempt = int(resend) + 1
            except (TypeError, ValueError):
                out.reject(f"{where}: http.request.resend_count must be an integer")
                return None
            if attempt < 1:
                attempt = 1
        code = found.get(_HTTP_CODE)
        if code is None:
            code = found.get(_CODE)
        source = found.get(_SOURCE)
        error = found.get(_ERROR)
        idem = found.get(_IDEM)
        return (
            span.trace_id,
            span.span_id,
            corr,
            _intern(str(flow)),
            stage,
            _intern(str(source)) if source else None,
            _intern(str(dest)) if dest else None,
            start,
            end,
            changed_at,
            attempt,
            None if code is None else str(code),
            None if error is None else str(error),
            None if idem is None else str(idem),
            received,
        )
