"""What a correlation ID must be, wherever one is found (explicit attributes or mapping rules)."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_NAME_LENGTH = 128  # flow, source and destination names


def correlation_problem(text: str, limit: int) -> str | None:
    """Why a correlation ID is refused, or None: longer than `limit` characters, or with control
    characters (a newline in an ID forges log lines and breaks every list that shows it)."""
    if len(text) > limit:
        return f"correlation ID longer than {limit} characters (limits.max_correlation_id_length)"
    if not text.isprintable() and _CONTROL.search(text):
        return "correlation ID contains control characters"
    return None


def has_nul(value: object) -> bool:
    """A NUL character: PostgreSQL's text cannot hold one, so a span naming one would fail every
    ledger transaction it is in (and, handed off by a follower, the leader's forever)."""
    return isinstance(value, str) and "\x00" in value


def name_problem(value: object) -> str | None:
    """Why a flow, source or destination name is refused, or None: longer than MAX_NAME_LENGTH
    characters, or with a NUL character."""
    if isinstance(value, str):
        if len(value) > MAX_NAME_LENGTH:
            return f"longer than {MAX_NAME_LENGTH} characters"
        if "\x00" in value:
            return "contains a NUL character"
    return None
