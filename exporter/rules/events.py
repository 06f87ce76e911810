"""Ledger events from a span a rule matched: its stages, source, destination, code and error.

Split from the engine so the per-span matching and the event layout read apart; `vals` holds the
span's attribute values by the engine's key index (EVENT_KEYS first), None where absent."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from syncwatch.intake.ids import name_problem
from syncwatch.ledger.records import Event
from syncwatch.ledger.schema import STAGE_ATTEMPT, STAGE_SOURCE
from syncwatch.rules.conditions import MAX_VALUE_LENGTH, Rule, text_of

_new = tuple.__new__  # records built without NamedTuple's keyword handling (the hot path's way, see ledger.records)

# Keys events read, first in every engine's key table (their index is fixed).
EVENT_KEYS = (
    "http.response.status_code",
    "error.type",
    "http.request.resend_count",
    "server.address",
    "peer.service",
    "url.full",
    "messaging.destination.name",
    "messaging.message.id",
)
CODE, ERROR, RESEND, SERVER, PEER, URL, DEST_NAME, MESSAGE_ID = range(len(EVENT_KEYS))


def destination(vals: list[Any]) -> str | None:
    """Where a matched span went: server.address, peer.service, the URL's host, or the destination name."""
    for ki in (SERVER, PEER):
        value = vals[ki]
        if value is not None:
            return text_of(value)
    url = vals[URL]
    if url is not None:
        try:
            host = urlsplit(text_of(url)[:2048]).hostname
        except ValueError:
            host = None
        if host:
            return host
    value = vals[DEST_NAME]
    return None if value is None else text_of(value)


_valid_names: set[tuple[str | None, str | None]] = set()  # (source, destination) pairs found valid
MAX_VALID_NAMES = 1024  # cleared when full


def _names_problem(source: str | None, dest: str | None) -> str | None:
    """Why a source or destination name is refused, or None (and the pair is remembered)."""
    for name in (source, dest):
        problem = name_problem(name)
        if problem is not None:
            return f"source or destination name {problem}"
    if len(_valid_names) >= MAX_VALID_NAMES:
        _valid_names.clear()
    _valid_names.add((source, dest))
    return None


def span_events(
    rule: Rule,
    stages: tuple[int, ...],
    closes: bool,
    span: Any,
    trace_id: bytes,
    vals: list[Any],
    service: str,
    received: float,
    corr: str | None,
    out: Any,
) -> list[Event] | None:
    """The events of a matched span (None: refused, counted in `out`); `corr` None while the
    correlation ID is still to be stitched (filled in then). `closes`: a stage other than source."""
    span_id = span.span_id
    if len(trace_id) != 16 or len(span_id) != 8:
        out.reject(f"span {span_id.hex() or '?'} (rule {rule.name}): trace_id must be 16 bytes and span_id 8 bytes")
        return None
    if not stages:
        return []
    source = rule.source or service or None
    # A source span opens the flow's configured destinations (a queue is not a destination).
    dest = rule.destination or (destination(vals) if closes else None)
    if dest is None and closes:
        out.reject(
            f"span {span_id.hex()} (rule {rule.name}): no destination (set `destination` on the rule, or server.address on the span)"
        )
        return None
    if (source, dest) not in _valid_names:
        problem = _names_problem(source, dest)
        if problem is not None:
            out.reject(f"span {span_id.hex()} (rule {rule.name}): {problem}")
            return None
    start = span.start_time_unix_nano / 1e9
    end = span.end_time_unix_nano / 1e9 or start
    if not closes:  # a source span only: no code, error or attempt
        return [
            _new(
                Event,
                (
                    trace_id,
                    span_id,
                    corr,
                    rule.flow,
                    STAGE_SOURCE,
                    source,
                    dest,
                    start,
                    end,
                    start,
                    None,
                    None,
                    None,
                    None,
                    received,
                ),
            )
        ]
    code = vals[CODE]
    if code is None:
        code_text = None
    elif code.__class__ is int:  # the usual status code
        code_text = str(code)
    else:
        code_text = text_of(code)[:MAX_VALUE_LENGTH]
    error = vals[ERROR]
    if error is None and span.status.code == 2:
        error = code_text or "error"  # an ERROR status without error.type (older conventions)
    error_text = None if error is None else text_of(error)[:MAX_VALUE_LENGTH]
    attempt = None
    resend = vals[RESEND]
    if resend is not None:
        text = text_of(resend)
        if text.isdigit() and int(text) < 1 << 31:
            attempt = int(text) + 1
    flow = rule.flow
    events = []
    for stage in stages:
        events.append(
            _new(
                Event,
                (
                    trace_id,
                    span_id,
                    corr,
                    flow,
                    stage,
                    source,
                    dest,
                    start,
                    end,
                    start if stage == STAGE_SOURCE else None,
                    attempt if stage == STAGE_ATTEMPT else None,
                    code_text if stage == STAGE_ATTEMPT else None,
                    error_text if stage != STAGE_SOURCE else None,
                    None,
                    received,
                ),
            )
        )
    return events
