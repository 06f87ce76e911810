"""Turn an OTLP trace export (as a trace_view.TraceView) into ledger events.

This is the hot path of span intake: it decodes each span's attributes into a dict
(intake.attributes) and builds one ledger.records.Event per stage span.
Everything else (correlated spans without a stage, uncorrelated spans) is only counted.

Size (issue 12): ~450 lines, kept as one module on purpose. Its helpers (attribute reads, code and
attempt parsing, length checks) exist only for this per-span loop and are tuned with it; a reader
follows one span from its attributes to an Event here, and bench/ingest.py guards the loop's speed.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from syncwatch.intake.attributes import MAX_DECODED, AttributeDecoder, BadAttribute
from syncwatch.intake.ids import correlation_problem, has_nul, name_problem
from syncwatch.ledger.records import Event
from syncwatch.ledger.schema import STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_NAMES, STAGE_SOURCE

STAGE = "syncwatch.stage"
FLOW = "syncwatch.flow"
SOURCE = "syncwatch.source"
DESTINATION = "syncwatch.destination"
PEER = "peer.service"
SERVER = "server.address"
CHANGED_AT = "syncwatch.source.changed_at"
RESEND = "http.request.resend_count"
HTTP_CODE = "http.response.status_code"
CODE = "syncwatch.response_code"
ERROR = "error.type"
IDEMPOTENCY_KEY = "syncwatch.idempotency_key"
# On confirm spans, for the duplicate-record audit (syncwatch.audit); not a ledger column.
RECORD_ID = "syncwatch.destination.record_id"
_READ = (STAGE, FLOW, SOURCE, DESTINATION, PEER, SERVER, CHANGED_AT, RESEND, HTTP_CODE, CODE, ERROR, IDEMPOTENCY_KEY)
_MAX_ERRORS = 5  # error messages kept per request for partial_success
# Times syncwatch accepts: from the epoch to the end of year 9999 (what a datetime can show).
MAX_TIME = 253402300799.0
MAX_ATTEMPT = 1 << 31
MAX_VALUE_LENGTH = 512  # idempotency keys, error types and response codes

_intern = sys.intern
_new = tuple.__new__  # an Event without the Python-level NamedTuple __new__ (ledger/records.py)


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
                raise ValueError(f"RFC 3339 time needs a zone offset, got {text[:40]!r}") from None
            ts = parsed.timestamp()
            if not 0 <= ts <= MAX_TIME:
                raise ValueError(f"time out of range (1970 to 9999), got {text[:40]!r}") from None
            return ts
    if not math.isfinite(ts):
        raise ValueError(f"expected a finite time, got {ts}")
    if ts > 1e17:  # nanoseconds
        ts /= 1e9
    elif ts > 1e14:  # microseconds
        ts /= 1e6
    elif ts > 1e11:  # milliseconds
        ts /= 1e3
    if not 0 <= ts <= MAX_TIME:
        raise ValueError(f"time out of range (1970 to 9999), got {value!r:.40}")
    return ts


@dataclass
class Extracted:
    events: list[Event] = field(default_factory=list)
    correlated: int = 0
    uncorrelated: int = 0
    unrelated: int = 0  # with mapping rules: spans of no flow (not counted for coverage)
    rejected: int = 0
    errors: list = field(default_factory=list)
    # (flow, correlation ID, destination, record ID, time) of confirm spans naming the record created
    record_ids: list = field(default_factory=list)

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


def _merged(resource: dict, attrs: dict) -> dict:
    """The span's attributes over its resource's defaults. An attribute the span sets to an empty
    value is None here: it counts as unset, and does not fall back to the resource's."""
    return {**resource, **attrs} if resource else attrs


def _is_whole_number(value) -> bool:
    if value.__class__ is int:
        return True
    if value.__class__ is float:
        return value.is_integer()
    return value.__class__ is str and value.strip().lstrip("-").isdigit()


def _code_text(code) -> str:
    """A response code as text; integral doubles (200.0) read as the integer they are."""
    if code.__class__ is float and code.is_integer():
        return str(int(code))
    return str(code)[:MAX_VALUE_LENGTH]


def _where(span) -> str:
    return f"span {span.span_id.hex() or '?'}"


_NO_RESOURCE: dict = {}


def _attempt_number(resend) -> int:
    """Attempt number (1 = first try) from http.request.resend_count: a non-negative whole number."""
    if isinstance(resend, bool):
        raise ValueError
    if isinstance(resend, float):
        if not resend.is_integer():
            raise ValueError
        resend = int(resend)
    elif not isinstance(resend, int):
        resend = int(str(resend).strip())
    if not 0 <= resend < MAX_ATTEMPT:
        raise ValueError
    return resend + 1


class KeyPlan(NamedTuple):
    """For spans with one set of attribute names (rules path): the correlation keys present, as
    (rank, key); whether syncwatch.stage is; and what the rule engine reads (RuleEngine.reads)."""

    corr: tuple[tuple[int, str], ...]
    stage: bool
    reads: Any  # syncwatch.rules.engine.Reads (intake does not import the rules)


MAX_PLANS = 1024  # remembered KeyPlans (distinct sets of attribute names), cleared when full
# Spans with more attributes (the SDK's default limit is 128) or longer names are planned each time
# instead of remembered: the plans stay within ~12 MiB.
MAX_PLAN_NAMES = 128
MAX_PLAN_CHARS = 4096


class SpanExtractor:
    def __init__(self, correlation_keys: list[str], max_correlation_id_length: int = 256, rules=None):
        self._corr_keys = tuple(correlation_keys)  # in order: the first one present wins
        self._max_corr = max_correlation_id_length
        self._rules = rules  # a syncwatch.rules.engine.RuleEngine, or None: no mapping rules
        self._plans: dict[tuple[str, ...], KeyPlan] = {}  # attribute names of a span -> its KeyPlan
        # What a span with very many attributes is read for: every key intake or the rules read.
        wanted = {*_READ, RECORD_ID, "service.name", *self._corr_keys, *(rules.names_read() if rules else ())}
        self.attributes = AttributeDecoder(frozenset(wanted))  # KeyValue bytes -> (key, value), remembered

    def _resource(self, rs, out: Extracted) -> tuple[dict, dict] | None:
        """(all attributes, the ones syncwatch reads as defaults for its spans) of a resource; None,
        with its spans refused, when an attribute of it is invalid."""
        raws = rs.resource.attributes
        if not len(raws):
            return _NO_RESOURCE, _NO_RESOURCE
        try:
            attrs = self.attributes.of(raws)
        except BadAttribute as exc:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.reject(f"{_where(span)}: its resource's {exc}")
            return None
        found = {}
        for key in (*_READ, *self._corr_keys):
            val = attrs.get(key)
            if val is not None:
                found[key] = val
        return attrs, found

    def extract(self, view, received: float) -> Extracted:
        """`view` is a trace_view.TraceView: each span's attributes are KeyValue bytes, decoded
        into a dict (intake.attributes) with the values spans repeat remembered."""
        if self._rules is not None:
            return self._extract_with_rules(view, received)
        out = Extracted()
        events = out.events
        event = self._event
        corr_keys = self._corr_keys
        decoded, wanted_of = self.attributes.__getitem__, self.attributes.wanted_of
        correlated = uncorrelated = 0
        for rs in view.resource_spans:
            res = self._resource(rs, out)
            if res is None:
                continue
            # Resource attributes give defaults (e.g. an integration that sets syncwatch.flow once).
            resource = res[1]
            # The correlation key of highest rank wins, whether the span or its resource sets it.
            rank = next((i for i, k in enumerate(corr_keys) if k in resource), len(corr_keys))
            resource_corr = resource[corr_keys[rank]] if rank < len(corr_keys) else None
            span_corr_keys = corr_keys[:rank]
            for ss in rs.scope_spans:
                for span in ss.spans:
                    try:
                        raws = span.attributes[:]  # a slice: one C call; AttributeDecoder.of, inlined
                        attrs = dict(map(decoded, raws)) if len(raws) <= MAX_DECODED else wanted_of(raws)
                    except BadAttribute as exc:
                        out.reject(f"{_where(span)}: {exc}")
                        continue
                    corr = None
                    for key in span_corr_keys:
                        corr = attrs.get(key)
                        if corr is not None:
                            break
                    if corr is None:
                        corr = resource_corr
                        if corr is None:
                            uncorrelated += 1
                            continue
                    get = _merged(resource, attrs).get
                    stage_name = get(STAGE)
                    if stage_name is None:
                        correlated += 1  # context span of a transaction: counts for coverage only
                        continue
                    text = corr if corr.__class__ is str else str(corr)
                    problem = correlation_problem(text, self._max_corr)
                    if problem is not None:
                        out.reject(f"{_where(span)}: {problem}")
                        continue
                    ev = event(span, get, corr, stage_name, received, out)
                    if ev is not None:
                        correlated += 1
                        events.append(ev)
        out.correlated, out.uncorrelated = correlated, uncorrelated
        return out

    def _extract_with_rules(self, view, received: float) -> Extracted:
        """As extract, except that spans without syncwatch.stage go to the mapping rules, and
        spans of no flow count as unrelated rather than uncorrelated.

        Spans of one instrumentation share one set of attribute names: per such set, a KeyPlan
        says which correlation keys and which names the rules read are present, so a span's
        attributes are asked only for keys it has (no lookups of absent old and new names)."""
        out = Extracted()
        rules = self._rules
        rules.begin(received)
        corr_keys = self._corr_keys
        plans = self._plans
        plan_for = self._plan
        rule_span = rules.span
        decoded, wanted_of = self.attributes.__getitem__, self.attributes.wanted_of
        for rs in view.resource_spans:
            res = self._resource(rs, out)
            if res is None:
                continue
            res_attrs, resource = res
            rank = next((i for i, k in enumerate(corr_keys) if k in resource), len(corr_keys))
            resource_corr = resource[corr_keys[rank]] if rank < len(corr_keys) else None
            resource_stage = resource.get(STAGE)
            service = str(res_attrs.get("service.name") or "")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    try:
                        raws = span.attributes[:]  # a slice: one C call; AttributeDecoder.of, inlined
                        attrs = dict(map(decoded, raws)) if len(raws) <= MAX_DECODED else wanted_of(raws)
                    except BadAttribute as exc:
                        out.reject(f"{_where(span)}: {exc}")
                        continue
                    names = tuple(attrs)
                    plan = plans.get(names)
                    if plan is None:
                        plan = plan_for(names)
                    present_corr, has_stage, reads = plan
                    corr = None
                    for i, key in present_corr:
                        if i >= rank:
                            break
                        corr = attrs[key]
                        if corr is not None:
                            break
                    if corr is None:
                        corr = resource_corr
                    stage_name = attrs[STAGE] if has_stage else resource_stage
                    if stage_name is None:
                        rule_span(span, attrs, reads, res_attrs, service, corr, received, out)
                        continue
                    if corr is None:
                        out.uncorrelated += 1  # explicit stage, no ID: the integration's own bug
                        continue
                    text = corr if corr.__class__ is str else str(corr)
                    problem = correlation_problem(text, self._max_corr)
                    if problem is not None:
                        out.reject(f"{_where(span)}: {problem}")
                        continue
                    ev = self._event(span, _merged(resource, attrs).get, corr, stage_name, received, out)
                    if ev is not None:
                        out.correlated += 1
                        out.events.append(ev)
                        rules.learn(span.trace_id, text, received, out)  # explicit attributes teach the trace
        rules.end(out)
        return out

    def _plan(self, names: tuple[str, ...]) -> KeyPlan:
        """The KeyPlan of spans with these attribute names (remembered, at most MAX_PLANS)."""
        present = frozenset(names)
        plan = KeyPlan(
            tuple((i, k) for i, k in enumerate(self._corr_keys) if k in present),
            STAGE in present,
            self._rules.reads(present),
        )
        plans = self._plans
        if len(names) <= MAX_PLAN_NAMES and sum(map(len, names)) <= MAX_PLAN_CHARS:
            if len(plans) >= MAX_PLANS:
                plans.clear()
            plans[names] = plan
        return plan

    @staticmethod
    def _event(span, get, corr, stage_name, received, out: Extracted) -> Event | None:
        """`get` reads the span's attributes over its resource's (_merged)."""
        stage = STAGE_NAMES.get(stage_name)
        if stage is None:
            out.reject(
                f"{_where(span)}: syncwatch.stage must be source, attempt, confirm or fail, got {str(stage_name)[:40]!r}"
            )
            return None
        trace_id, span_id = span.trace_id, span.span_id
        if len(trace_id) != 16 or len(span_id) != 8:
            out.reject(f"{_where(span)}: trace_id must be 16 bytes and span_id 8 bytes")
            return None
        flow = get(FLOW)
        if not flow:
            out.reject(f"{_where(span)}: syncwatch.flow is missing on a {stage_name} span")
            return None
        if (problem := name_problem(flow)) is not None:
            out.reject(f"{_where(span)}: syncwatch.flow {problem}")
            return None
        dest = get(DESTINATION)
        if not dest:
            dest = get(PEER) or get(SERVER)
        if not dest and stage != STAGE_SOURCE:
            out.reject(
                f"{_where(span)}: no destination (syncwatch.destination, peer.service or server.address) "
                f"on a {stage_name} span"
            )
            return None
        if (problem := name_problem(dest)) is not None:
            out.reject(f"{_where(span)}: destination name {problem}")
            return None
        start = span.start_time_unix_nano / 1e9
        end = span.end_time_unix_nano / 1e9 or start
        raw_changed = get(CHANGED_AT)
        if raw_changed is not None:
            try:
                changed_at = parse_timestamp(raw_changed)
            except ValueError as exc:
                out.reject(f"{_where(span)}: syncwatch.source.changed_at: {exc}")
                return None
        else:
            changed_at = start if stage == STAGE_SOURCE else None
        source = get(SOURCE)
        if (problem := name_problem(source)) is not None:
            out.reject(f"{_where(span)}: syncwatch.source {problem}")
            return None
        # Only what the ledger reads for this stage: a source span needs none of the rest.
        attempt = code = error = idem = None
        if stage != STAGE_SOURCE:
            error = get(ERROR)
            if stage == STAGE_ATTEMPT:
                resend = get(RESEND)
                if resend is not None:
                    try:
                        attempt = _attempt_number(resend)
                    except (TypeError, ValueError, OverflowError):
                        out.reject(
                            f"{_where(span)}: http.request.resend_count must be a whole number from 0 to "
                            f"{MAX_ATTEMPT - 1}, got {str(resend)[:40]!r}"
                        )
                        return None
                code = get(HTTP_CODE)
                if code is not None and not _is_whole_number(code):
                    out.reject(f"{_where(span)}: http.response.status_code must be an integer, got {str(code)[:40]!r}")
                    return None
                if code is None:
                    code = get(CODE)
            else:
                idem = get(IDEMPOTENCY_KEY)
                if idem is not None and len(str(idem)) > MAX_VALUE_LENGTH:
                    out.reject(f"{_where(span)}: syncwatch.idempotency_key longer than {MAX_VALUE_LENGTH} characters")
                    return None
                if has_nul(idem):
                    out.reject(f"{_where(span)}: syncwatch.idempotency_key contains a NUL character")
                    return None
                rid = get(RECORD_ID) if stage == STAGE_CONFIRM else None
                if rid is not None and 0 < len(str(rid)) <= MAX_VALUE_LENGTH:
                    out.record_ids.append((str(flow), str(corr), dest and str(dest), str(rid), end or received))
        return _new(
            Event,
            (
                trace_id,
                span_id,
                corr if corr.__class__ is str else str(corr),
                _intern(str(flow)),
                stage,
                _intern(str(source)) if source else None,
                _intern(str(dest)) if dest else None,
                start,
                end,
                changed_at,
                attempt,
                None if code is None else _code_text(code),
                None if error is None else str(error)[:MAX_VALUE_LENGTH],
                None if idem is None else str(idem),
                received,
            ),
        )
